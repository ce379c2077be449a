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
from .sources import BOM_HINT, not_utf8


class JsonLimitError(ValueError):
    pass


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
                    f"a number with {len(text.lstrip('-'))} digits; at most {digits} "
                    f"({env_name('max_number_digits')})."
                )
            return int(text)

        self.decoder = json.JSONDecoder(parse_int=parse_int)
        self._plain = json.JSONDecoder()

    def too_deep(self, text: str) -> bool:
        """Whether the JSON text nests deeper than the limit, from its characters, before parsing."""
        return nesting_over(text, self.limits.max_depth)

    def depth_problem(self) -> str:
        return f"lists/objects nested more than {self.limits.max_depth} deep ({env_name('max_depth')})."

    def loads(self, text: str):
        """The value of one complete JSON text; JsonLimitError or JSONDecodeError when it is bad."""
        if self.too_deep(text):
            raise JsonLimitError(self.depth_problem())
        decoder = self.decoder if self._long_digits in _digits_as_zeros(text) else self._plain
        try:
            return decoder.decode(text)
        except RecursionError:  # the scan bounds depth; kept for a recursion limit set below it
            raise JsonLimitError(self.depth_problem()) from None


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
        sink.error(Problem("empty file.", file=name))
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
                raise FileProblem(text.problem("Expecting value"))
            continue
        if sep == "]":
            text.pos += 1
            break
        raise FileProblem(
            text.problem("Expecting ',' delimiter" if sep else "Expecting ',' delimiter or ']'")
        )
    if text.peek() != "":
        raise FileProblem(text.problem("Extra data"))


_FAILED = object()


def _element(text: _JsonText, name: str, index: int, bounded: BoundedJson, sink: Sink):
    """Decode the value at the cursor; a value over the limits is reported and skipped."""
    try:
        value, size = text.decode(bounded.decoder)
    except FileProblem as exc:
        if exc.problem.record is None and exc.problem.line is None:
            exc.problem.record = index
        raise
    except RecursionError:
        raise FileProblem(Problem(bounded.depth_problem(), file=name, record=index)) from None
    except JsonLimitError as exc:
        raise FileProblem(Problem(str(exc), file=name, record=index)) from None
    if isinstance(value, dict | list) and bounded.too_deep(text.buf[text.pos - size : text.pos]):
        sink.error(Problem(bounded.depth_problem(), file=name, record=index))
        return _FAILED
    return value


def _not_a_list(text: _JsonText, name: str, bounded: BoundedJson, sink: Sink) -> None:
    try:
        value, _ = text.decode(bounded.decoder)
    except (RecursionError, JsonLimitError):
        value = _FAILED
    after = text.peek()
    if after:
        problem = text.problem("Extra data")
        if after == "{":
            problem.message += " It looks like JSON Lines: rename it to .jsonl."
        sink.error(problem)
        return
    if not isinstance(value, dict):
        kind = "something else" if value is _FAILED else json_type(value)
        sink.error(Problem(f"expected a list of records; got {kind}.", file=name))
        return
    lists = [k for k, v in value.items() if isinstance(v, list)]
    hint = f" If the records are under {short(lists[0])}, extract that list." if len(lists) == 1 else ""
    sink.error(
        Problem(
            "expected a list of records at the top level; got an object. Wrap a single record in [ ]." + hint,
            file=name,
        )
    )


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

    def problem(self, msg: str, pos: int | None = None) -> Problem:
        pos = self.pos if pos is None else pos
        line = self.line_base + self.buf.count("\n", 0, pos)
        column = pos - self.buf.rfind("\n", 0, pos)
        hint = BOM_HINT if self.buf.startswith("\ufeff", pos) else ""
        return Problem(f"invalid JSON: {msg} (column {column}).{hint}", file=self.name, line=line)

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
                        raise FileProblem(self.problem(exc.msg, exc.pos)) from None
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
