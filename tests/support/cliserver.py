"""A fork server for running the real `tuneforge` entry point many times, fast, each in its own process.

Started once (``python tests/support/cliserver.py``), it imports the CLI and then, for each request (one JSON
line on stdin), forks a child that sets an address-space limit (RLIMIT_AS), its environment, working
folder and argv, redirects stdout/stderr to files and runs ``tuneforge.cli.main.main()`` to its normal
interpreter exit. The server waits with a deadline (the child is killed past it) and answers one JSON
line: exit status (negative for a signal; 134 when the C++ runtime aborts), wall seconds, peak resident
memory (ru_maxrss of the child) and whether it timed out. A fresh `tuneforge` process costs about a
second here; a fork costs milliseconds, which is what lets the fuzz suite run hundreds of cases.

Nothing that starts threads (pyarrow, torch) is imported before forking.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import sys
import time


def _child(req: dict) -> None:
    os.chdir(req["cwd"])
    for key in [k for k in os.environ if k.startswith("TUNEFORGE_")]:
        del os.environ[key]
    os.environ.update(req["env"])
    if req.get("rlimit_as"):
        resource.setrlimit(resource.RLIMIT_AS, (req["rlimit_as"], req["rlimit_as"]))
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdin.close()
    from tuneforge.settings import get_settings

    get_settings.cache_clear()
    sys.argv = ["tuneforge", *req["argv"]]
    from tuneforge.cli.main import main

    main()
    sys.exit(0)


def serve() -> None:
    from tuneforge.cli import main as _preload  # noqa: F401  (the import cost is paid once, here)

    gc.freeze()  # children inherit these objects untouched: no copy-on-write faults from the collector

    for line in sys.stdin:
        req = json.loads(line)
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            # An exception escaping main() ends the child as it would end `tuneforge`: the traceback
            # printed to its stderr file, exit 1.
            _child(req)
        deadline = start + req["timeout"]
        timed_out = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)
        answer = {
            "code": 128 - code if code < 0 else code,  # as a shell reports a signal: SIGABRT → 134
            "signal": -code if code < 0 else 0,
            "seconds": time.perf_counter() - start,
            "maxrss_mb": usage.ru_maxrss / 1024,
            "timed_out": timed_out,
        }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
