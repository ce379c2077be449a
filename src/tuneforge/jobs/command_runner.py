"""The parent of a command job's own command: it makes the job's mounts read-only, runs the command,
waits for it and records its exit code in the job folder.

The executor starts it in the job's working directory, in the job's clean environment::

    python -I -m tuneforge.jobs.command_runner --folder ROOT --attempt N \\
        [--read-only PATH …] [--not-enforced REASON] [--workers N] -- COMMAND …

With ``--workers N`` it runs N copies as the ranks of one group (``jobs/ranks.py``: the variables
torchrun sets, one log each in ``logs/rank-N.txt``), and records the group's exit code.

Read-only mounts. The job folder links the stores' datasets and models in; a link does not stop a write
through it, and clearing write bits does not stop root (or an owner who sets them back). So the runner
enters a mount namespace of its own (a user namespace too when it is not root), bind-mounts every
``--read-only`` path onto itself read-only there, and runs the command inside: the paths the command
sees are the same as without it, and every write under them fails with "Read-only file system". Where
namespaces are not available (not Linux, EPERM under a container's seccomp, user namespaces turned
off) the command runs anyway, with the links and cleared write bits alone, and the runner says so once
in the log and in events.jsonl: never a failed job for it.

Exit code. After a restart the control plane re-attaches to the runner (it is not its parent then), so
the runner writes the command's exit code to ``exit_code.json`` before it exits with the same code. A
SIGTERM to the job's process group reaches the command directly; the runner itself only notes it, so it
is still there to record how the command ended.

Standard library only, and nothing runs at import: the control plane's layering test imports it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import folder as fmt
from .ranks import die_with_parent, run_ranks

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
# A read-only remount of a bind mount must keep the flags the kernel locked on the original mount
# (always in a user namespace): statvfs's ST_* flags and the matching mount(2) MS_* flags.
KEPT_FLAGS = {
    os.ST_NOSUID: 2,
    os.ST_NODEV: 4,
    os.ST_NOEXEC: 8,
    os.ST_NOATIME: 1024,
    os.ST_NODIRATIME: 2048,
    os.ST_RELATIME: 1 << 21,
}
PR_CAPBSET_DROP, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 24, 19, 21
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _libc():
    return ctypes.CDLL(None, use_errno=True)  # the C library this Python is linked with


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _enter_namespace(libc) -> None:
    """A mount namespace of this process's own; as a non-root user, inside a user namespace that maps
    this user to itself (so files keep their owners and the command runs as the same user)."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        Path("/proc/self/setgroups").write_text("deny")  # required before an unprivileged gid_map
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    # Private from the root down: the bind mounts below must not propagate back to the host's namespace.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")


def _bind_read_only(libc, path: str) -> None:
    target = os.fsencode(path)
    _check(libc.mount(target, target, None, MS_BIND | MS_REC, None), f"bind-mounting {path}")
    flags = os.statvfs(path).f_flag
    kept = 0
    for st_flag, ms_flag in KEPT_FLAGS.items():
        if flags & st_flag:
            kept |= ms_flag
    _check(
        libc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None),
        f"remounting {path} read-only",
    )


def make_read_only(paths: list[str]) -> str | None:
    """Enter a namespace of its own and bind each path read-only; why not, when it could not (None: done).

    Either every path is read-only or the caller is told why not: a partial failure (say the third bind)
    is reported like a failure of the namespace itself.
    """
    if not sys.platform.startswith("linux"):
        return f"mount namespaces need Linux (this is {sys.platform})"
    try:
        libc = _libc()
        _enter_namespace(libc)
        for path in paths:
            _bind_read_only(libc, path)
    except OSError as exc:
        if exc.strerror is None:
            return str(exc)
        return exc.strerror if exc.filename is None else f"{exc.filename}: {exc.strerror}"
    except AttributeError as exc:  # a C library without unshare or mount
        return str(exc)
    return None


def drop_escape_capabilities() -> str | None:
    """Take CAP_SYS_ADMIN and CAP_SYS_PTRACE out of this process's bounding set, so the command exec'd
    from it never has them: without the first, root cannot ``umount`` the read-only binds; without the
    second, it cannot reach the server's own view of the store through ``/proc/<server pid>/root`` (the
    server keeps capabilities the command lacks, which is what the kernel's ptrace check then refuses).
    Returns why it could not, or None. Only root has them to lose."""
    if os.geteuid() != 0:
        return None
    try:
        libc = _libc()
        for cap in (CAP_SYS_ADMIN, CAP_SYS_PTRACE):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                return f"dropping capability {cap}: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return f"dropping capabilities: {exc}"
    return None


def _say(message: str) -> None:
    """A line in the job's log (the runner's stderr is the log, like the command's)."""
    sys.stderr.write(f"tuneforge: {message}\n")
    sys.stderr.flush()


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: command_runner --folder ROOT --attempt N [--read-only PATH …] -- COMMAND …")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="tuneforge.jobs.command_runner")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--attempt", required=True, type=int)
    parser.add_argument("--read-only", action="append", default=[])
    parser.add_argument("--not-enforced", default=None, help="skip the namespace, for this reason")
    parser.add_argument("--workers", type=int, default=1, help="run N copies, ranks 0…N-1 (jobs/ranks.py)")
    args = parser.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    if not command:
        raise SystemExit("command_runner: no command after '--'")
    return args, command


def run(argv: list[str]) -> int:
    args, command = _parse(argv)
    stopping: list[int] = []
    for sig in STOP_SIGNALS:
        # A handler, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))

    if args.read_only:
        reason = args.not_enforced or make_read_only(args.read_only) or drop_escape_capabilities()
        fields = {"attempt": args.attempt, "read_only": reason is None, "paths": args.read_only}
        if reason is not None:
            fields["reason"] = reason
            _say(f"mounts are not enforced read-only: {reason} (the stored files' write bits are cleared)")
        fmt.append_event(args.folder, fmt.MOUNTS, **fields)

    if stopping:  # cancelled before the command started: there is nothing to run
        code = 128 + stopping[0]
    else:
        code = _run_command(command, args.workers, args.folder)
    fmt.write_exit_code(args.folder, args.attempt, code)
    return code


def _run_command(command: list[str], workers: int, folder: Path) -> int:
    try:
        if workers > 1:
            return run_ranks(command, workers, folder)
        proc = subprocess.Popen(command, preexec_fn=die_with_parent)  # same group, cwd, env, stdio
    except OSError as exc:
        _say(f"cannot run {command[0]!r}: {exc.strerror or exc}")
        return 127 if isinstance(exc, FileNotFoundError) else 126  # the shell's codes
    code = proc.wait()  # the stop signals only append to a list: the wait goes on (PEP 475)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
