"""Run the real `tuneforge` entry point in-process and capture what it prints and returns."""

from __future__ import annotations

import sys


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from tuneforge.cli.main import main

    old = sys.argv
    sys.argv = ["tuneforge", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
