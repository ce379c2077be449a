"""The `tuneforge` command."""

from __future__ import annotations

import logging
import os
import sys

import typer

from tuneforge.errors import TuneforgeError

from . import datasets, models, quickstart, serve, templates, train
from .common import err_console

app = typer.Typer(
    help="tuneforge: fine-tune and deploy large language models on your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.add_typer(templates.app, name="templates")

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
app.command(name="serve")(serve.serve)
app.command(name="chat")(serve.chat)


def main() -> None:
    try:
        # click returns a command's Exit code instead of raising when not standalone.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TuneforgeError as exc:
        if STATE["debug"]:
            raise
        from rich.markup import escape  # "pip install 'tuneforge[vllm]'" is not markup

        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
