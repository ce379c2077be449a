"""JSON with bounds: one text decoded with its number size and nesting depth bounded (``BoundedJson``,
also the decoder of HTTP bodies), and a JSON file whose top level is a list read one element at a time
(``array_values``), so the text held is about one record however long the file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator

from tuneforge.errors import Problem
from tuneforge.settings import env_name

from .json_depth import nesting_over
from .limits import CHUNK, FileProblem, Limits, Sink, short, too_long
from .problem_codes import message, problem
from .sources import not_utf8


class JsonLimitError(ValueError):
    """A number or a nesting over the limits: the problem ``code`` (data/problem_codes.py) and params."""

    def __init__(self, code: str, **params):
        super().__init__(message(code, **params))
        self.code, self.params = code, params

    def at(self, name: str, line: int | None = None, record: int | None = None) -> Problem:
        return problem(self.code, file=name, line=line, record=record, **self.params)


# Every ASCII digit → b"0", every other byte → b" ": a run of N digits is then a plain substring search
# (0.03 s on 7.6 MiB, where re.search("[0-9]{N}") took 0.3 s)
_ZERO_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))


def _digits_as_zeros(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass").translate(_ZERO_DIGITS)


class BoundedJson:
    """json decoding with the number size and nesting depth bounded.

    Python's own limits fail badly on hostile input: an integer over 4,300 digits raises ValueError,
    and nesting deeper than the recursion limit raises RecursionError, in parsing or in any later
    recursive walk (repr, copy, json.dumps). Both are turned into one error naming the setting.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        digits = limits.max_number_digits
        # Only a text holding a longer run of digits needs the per-integer Python hook (a call per
        # integer, twice json's own time on a body of small numbers); every other text uses C's.
        self._long_digits = b"0" * (digits + 1)

        def parse_int(text: str) -> int:
            if len(text) > digits + (text[0] == "-"):
                raise JsonLimitError(
                    "number_too_long",
                    digits=len(text.lstrip("-")),
                    max=digits,
                    env=env_name("max_number_digits"),
                )
            return int(text)

        self.decoder = json.JSONDecoder(parse_int=parse_int)
        self._plain = json.JSONDecoder()

    def too_deep(self, text: str) -> bool:
        """Whether the JSON text nests deeper than the limit, from its characters, before parsing."""
        return nesting_over(text, self.limits.max_depth)

    def too_deep_error(self) -> JsonLimitError:
        return JsonLimitError("too_deep", max=self.limits.max_depth, env=env_name("max_depth"))

    def loads(self, text: str):
        """The value of one complete JSON text; JsonLimitError or JSONDecodeError when it is bad."""
        if self.too_deep(text):
            raise self.too_deep_error()
        decoder = self.decoder if self._long_digits in _digits_as_zeros(text) else self._plain
        try:
            return decoder.decode(text)
        except RecursionError:  # the scan bounds depth; kept for a recursion limit set below it
            raise self.too_deep_error() from None


def json_type(value) -> str:
    """The JSON name of a decoded value's type, for a message."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else type(value).__name__)


# --------------------------------------------------------------------------------- a list of records


def array_values(
    chunks: Iterator[bytes], name: str, limits: Limits, bounded: BoundedJson, sink: Sink
) -> Iterator[tuple[int, object]]:
    """(index, value) of each element of a JSON file whose top level is a list, parsed one at a time;
    an element over the limits is reported to the sink and skipped, a top level that is no list is
    reported with a hint, a broken file raises FileProblem."""
    text = _JsonText(chunks, name, limits)
    first = text.peek()
    if first == "":
        sink.error(problem("empty_file", file=name))
        return
    if first != "[":
        _not_a_list(text, name, bounded, sink)
        return
    text.pos += 1
    index = 0
    while True:
        if text.peek() == "]":
            text.pos += 1
            break
        value = _element(text, name, index, bounded, sink)
        if value is not _FAILED:
            yield index, value
        index += 1
        sep = text.peek()
        if sep == ",":
            text.pos += 1
            if text.peek() == "]":
                raise FileProblem(text.invalid("Expecting value"))
            continue
        if sep == "]":
            text.pos += 1
            break
        raise FileProblem(
            text.invalid("Expecting ',' delimiter" if sep else "Expecting ',' delimiter or ']'")
        )
    if text.peek() != "":
        raise FileProblem(text.invalid("Extra data"))


_FAILED = object()


def _element(text: _JsonText, name: str, index: int, bounded: BoundedJson, sink: Sink):
    """Decode the value at the cursor; a value over the limits is reported and skipped."""
    try:
        value, size = text.decode(bounded.decoder)
    except FileProblem as exc:
        if exc.problem.record is None and exc.problem.line is None:
            exc.problem.record = index + 1
        raise
    except RecursionError:
        raise FileProblem(bounded.too_deep_error().at(name, record=index + 1)) from None
    except JsonLimitError as exc:
        raise FileProblem(exc.at(name, record=index + 1)) from None
    if isinstance(value, dict | list) and bounded.too_deep(text.buf[text.pos - size : text.pos]):
        sink.error(bounded.too_deep_error().at(name, record=index + 1))
        return _FAILED
    return value


def _not_a_list(text: _JsonText, name: str, bounded: BoundedJson, sink: Sink) -> None:
    try:
        value, _ = text.decode(bounded.decoder)
    except (RecursionError, JsonLimitError):
        value = _FAILED
    after = text.peek()
    if after:
        sink.error(text.invalid("Extra data", lines_hint=after == "{"))
        return
    if not isinstance(value, dict):
        kind = "something else" if value is _FAILED else json_type(value)
        sink.error(problem("expected_list", file=name, got=kind))
        return
    lists = [k for k, v in value.items() if isinstance(v, list)]
    if len(lists) == 1:
        sink.error(problem("top_level_object_list", file=name, key=short(lists[0])))
    else:
        sink.error(problem("top_level_object", file=name))


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class _JsonText:
    """A cursor over the decoded text of a JSON file, refilled chunk by chunk.

    ``decode`` parses one value at the cursor; a value cut by the end of the buffer is retried with
    more text, up to the record limit, so the buffer never holds more than about one record.
    """

    def __init__(self, chunks: Iterator[bytes], name: str, limits: Limits):
        self.chunks, self.name, self.limits = chunks, name, limits
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.line_base = 1  # line number of buf[0]
        self.offset = 0  # bytes decoded so far
        self.first = True

    def _more(self) -> bool:
        if self.eof:
            return False
        if self.pos:  # drop what was parsed
            self.line_base += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos = self.buf[self.pos :], 0
        raw = next(self.chunks, None)
        if raw is None:
            self.eof = True
            raw, final = b"", True
        else:
            final = False
            if self.first and raw.startswith(codecs.BOM_UTF8):
                raw, self.offset = raw[3:], 3
            self.first = False
        try:
            self.buf += self.decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            line = self.line_base + self.buf.count("\n") + raw[: exc.start].count(b"\n")
            raise not_utf8(raw, exc, self.offset, self.name, line) from None
        self.offset += len(raw)
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), leaving the cursor on it."""
        while True:
            # Whitespace is skipped by a regex, about as fast as zip members inflate: a character loop
            # took 257 s over 1.5 GiB of spaces.
            self.pos = _JSON_SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def invalid(self, msg: str, pos: int | None = None, lines_hint: bool = False) -> Problem:
        """Invalid JSON at ``pos``; ``lines_hint``: the text after the first value looks like JSON Lines."""
        pos = self.pos if pos is None else pos
        line = self.line_base + self.buf.count("\n", 0, pos)
        column = pos - self.buf.rfind("\n", 0, pos)
        code = "invalid_json_bom" if self.buf.startswith("\ufeff", pos) else "invalid_json"
        code = "invalid_json_lines" if lines_hint else code
        return problem(code, file=self.name, line=line, reason=msg, column=column)

    def decode(self, decoder: json.JSONDecoder):
        """(value, its length in characters) at the cursor, which moves past it."""
        limit = self.limits.max_record_bytes
        need = 0
        while True:
            available = len(self.buf) - self.pos
            if available >= need or self.eof:
                try:
                    value, end = decoder.raw_decode(self.buf, self.pos)
                except json.JSONDecodeError as exc:
                    cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 16
                    if self.eof or not cut:
                        raise FileProblem(self.invalid(exc.msg, exc.pos)) from None
                else:
                    # A number at the very end of the buffer may continue in the next chunk.
                    if end < len(self.buf) or self.eof:
                        size = end - self.pos
                        if size > limit:
                            raise FileProblem(too_long(self.name, None, self.limits, "record"))
                        self.pos = end
                        return value, size
                if available > limit:
                    raise FileProblem(too_long(self.name, None, self.limits, "record"))
                need = 2 * available + CHUNK  # grow geometrically: a long record is not re-parsed often
            if not self._more():
                continue
