"""A realistic, offline instruction dataset for benchmarks: Python's own documentation.

Each record asks what a standard-library function or class does and answers with its docstring,
which gives real English of varied length. Records are kept when the rendered conversation is
between 40 and 500 tokens, the spread of typical alpaca-style data.
"""

from __future__ import annotations

import importlib
import inspect
import random

MODULES = [
    "json",
    "os",
    "os.path",
    "re",
    "shutil",
    "collections",
    "itertools",
    "functools",
    "pathlib",
    "subprocess",
    "argparse",
    "logging",
    "datetime",
    "string",
    "textwrap",
    "random",
    "statistics",
    "csv",
    "zipfile",
    "tarfile",
    "gzip",
    "hashlib",
    "base64",
    "urllib.parse",
    "http.client",
    "email",
    "heapq",
    "bisect",
    "array",
    "struct",
    "copy",
    "pprint",
    "enum",
    "typing",
    "dataclasses",
    "contextlib",
    "abc",
    "io",
    "tempfile",
    "glob",
    "fnmatch",
    "sqlite3",
    "threading",
    "queue",
    "socket",
    "ssl",
    "select",
    "asyncio",
    "unittest",
    "doctest",
    "decimal",
    "fractions",
    "math",
    "operator",
    "calendar",
    "locale",
    "gettext",
    "codecs",
    "unicodedata",
    "difflib",
    "html",
    "xml.dom",
]


def docstring_records() -> list[dict]:
    records, seen = [], set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj)
            if not doc or len(doc) < 40 or doc in seen:
                continue
            seen.add(doc)
            kind = "class" if inspect.isclass(obj) else "function"
            records.append(
                {
                    "instruction": f"Explain what the Python {kind} `{name}.{attr}` does.",
                    "input": "",
                    "output": doc,
                }
            )
    return records


def bench_records(tokenizer, n_train: int, n_eval: int, seed: int = 0, lo: int = 40, hi: int = 500):
    """(train, eval) alpaca records whose rendered length lies in [lo, hi] tokens."""
    from tuneforge.data.formats import FORMATS, convert_rows
    from tuneforge.data.readers import RawRow

    rows = [RawRow(r, "docs", i) for i, r in enumerate(docstring_records())]
    chats = convert_rows(rows, FORMATS["alpaca"], [])
    bins: dict[int, list[dict]] = {}
    for raw, chat in zip(rows, chats, strict=True):
        text = tokenizer.apply_chat_template(chat["messages"], tokenize=False)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if lo <= n <= hi:
            bins.setdefault(n // 50, []).append(raw.data)
    # Short docstrings far outnumber long ones; drawing round-robin from 50-token bins spreads the
    # lengths across the whole range, as in real instruction data.
    rng = random.Random(seed)
    for b in bins.values():
        rng.shuffle(b)
    keep = []
    while any(bins.values()):
        for k in sorted(bins):
            if bins[k]:
                keep.append(bins[k].pop())
    if len(keep) < n_train + n_eval:
        raise SystemExit(f"only {len(keep)} records in range; ask for fewer")
    keep = keep[: n_train + n_eval]
    rng.shuffle(keep)
    return keep[:n_train], keep[n_train:]
