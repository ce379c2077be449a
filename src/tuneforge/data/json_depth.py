"""How deep a JSON text nests its lists/objects, answered from its bytes before it is parsed.

Python's parser recurses once per level: 100k levels raise RecursionError, and a value a few hundred
levels deep parses but breaks the first recursive walk after it (a pydantic model, ``json.dumps``). A
text may come from anyone (an HTTP body, a dataset record), so the check uses C-speed byte operations
only: a hostile text must not make the check itself slow, and an honest one pays almost nothing.
"""

from __future__ import annotations

import re
from itertools import accumulate

_STRING = re.compile(rb'"[^"]*"')
_KEEP = b'"[]{}'
_DROP = bytes(sorted(set(range(256)) - set(_KEEP)))
# '[' and '{' → +1, ']' and '}' → -1 as signed bytes, so accumulate() sums nesting at C speed
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_BLOCK = 1 << 16


def _deeper(brackets: bytes, limit: int) -> bool:
    """Whether a running sum of +1/-1 over the brackets passes ``limit``; block by block, so a deep
    text stops the scan at its first block."""
    if limit < 0:
        return True
    depth = 0
    for at in range(0, len(brackets), _BLOCK):
        steps = memoryview(brackets[at : at + _BLOCK].translate(_SIGNS)).cast("b")
        if max(accumulate(steps, initial=depth)) > limit:
            return True
        depth += sum(steps)
    return False


def nesting_over(raw: bytes | str, limit: int) -> bool:
    """Whether the JSON text nests lists/objects deeper than ``limit``, found without parsing it:

    - fewer brackets than the limit cannot nest deeper (most texts stop here, a str before any encode);
    - escaped backslashes and quotes go, left to right, as JSON pairs them; then only quotes and
      brackets are kept, and adjacent quotes dropped: nothing lies between them, and dropping two
      keeps the open/close parity of every later quote, so bracket-free strings vanish cheaply;
    - the strings that are left (those holding brackets) are cut out;
    - innermost ``[]``/``{}`` pairs are dropped twice each (ordinary records shrink to almost nothing;
      each drop lowers the deepest nesting by at most one, which the bound allows for) and the rest
      is summed.
    """
    opens = ("[", "{") if isinstance(raw, str) else (b"[", b"{")
    if raw.count(opens[0]) + raw.count(opens[1]) <= limit:
        return False
    if isinstance(raw, str):  # the scan works on bytes; a str may hold lone surrogates JSON escapes made
        raw = raw.encode("utf-8", "surrogatepass")
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DROP).replace(b'""', b"")
    brackets = _STRING.sub(b"", text).replace(b'"', b"")
    shrunk = brackets
    for _ in range(2):
        shrunk = shrunk.replace(b"[]", b"").replace(b"{}", b"")
    if _deeper(shrunk, limit):
        return True
    if not _deeper(shrunk, limit - 4):
        return False
    return _deeper(brackets, limit)
