"""The `tuneforge` command."""

from __future__ import annotations

import logging
import os
import sys

import typer

from tuneforge.errors import TuneforgeError

from . import datasets, evals, jobs, models, quickstart, serve, server, spec, templates, tokens, train
from .common import err_console
from .deployments import app as deployments_app

app = typer.Typer(
    help="tuneforge: fine-tune and deploy large language models on your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.add_typer(templates.app, name="templates")
app.add_typer(spec.app, name="spec")
app.add_typer(jobs.app, name="jobs")
app.add_typer(tokens.app, name="tokens")
app.add_typer(evals.app, name="evals")
app.add_typer(deployments_app, name="deployments")

STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show info logs."),
):
    STATE["debug"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # transformers and friends are chatty at import; keep their warnings, drop their info lines.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if not debug else "info")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not debug:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("TQDM_DISABLE", "1")  # library tqdm bars; our Rich bars say what happens


app.command(name="train")(train.train)
app.command(name="eval")(train.evaluate)
app.command(name="quickstart")(quickstart.quickstart)
app.command(name="server")(server.server)
app.command(name="serve")(serve.serve)
app.command(name="chat")(serve.chat)


def _one_line(text: str) -> str:
    from rich.markup import escape

    text = " ".join(str(text).split())
    text = text if len(text) <= 500 else text[:499] + "…"
    return escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def main() -> None:
    """The error boundary: a TuneforgeError is one clear message and its exit code (2 for bad input);
    anything else is a bug, reported in one line with exit 1. Tracebacks only with --debug."""
    try:
        # click returns a command's Exit code instead of raising when not standalone.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TuneforgeError as exc:
        if STATE["debug"]:
            raise
        message = str(exc)
        if "\n" not in message:
            message = _one_line(message)
        else:  # a list of problems, one a line
            message = "\n".join(_one_line(line) for line in message.splitlines())
        err_console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        # click's, or the copy typer ≥ 0.2x vendors as typer._click (a different class with the same name)
        if any(c.__name__ == "ClickException" for c in type(exc).__mro__) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2) or 2)
        if STATE["debug"]:
            raise
        kind = "out of memory" if isinstance(exc, MemoryError) else type(exc).__name__
        err_console.print(
            f"[red]internal error:[/] {kind}: {_one_line(exc)} (run with --debug for the traceback, "
            "and please report it)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
