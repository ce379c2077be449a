"""The one rule for the names people give things (datasets, models, jobs, deployments, tokens, registered
models), and the shapes of the ids the server gives them.

A name is what a person reads in a listing and types on a command line, so it is short, printable text:
no control or format characters (a NUL cuts a C string; U+202E reverses what follows it in a listing and
spoofs another name), no line separators, no lone surrogates. A name never looks like an id of any noun:
lookups take an id or a name, and a dataset named ``ds-…`` would otherwise stand in for another dataset.
Lookups resolve an id-shaped reference by id only (``looks_like_id``), so a legacy row whose name looks
like an id cannot shadow the dataset that owns that id either.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

from tuneforge.errors import ConfigError

MAX_NAME = 100

# Every id the server makes, with its length of hex digits: datasets (ds-, and ds-pending- while an upload
# validates), jobs, deployments, registered models, evaluations, pulls, command-job code, OpenAI fine-tuning
# jobs (ftjob-) and files, and token ids (16 hex digits alone). A name of another length (``job-1``,
# ``dep-add``) is no id and stays a usable name.
ID_HEX_DIGITS = {"ds-pending": 12, "ds": 12, "job": 12, "dep": 12, "rm": 12, "eval": 12, "pull": 12}
ID_HEX_DIGITS |= {"code": 12, "ftjob": 12, "file": 24}
ID_PREFIXES = tuple(ID_HEX_DIGITS)
ID_RE = re.compile(
    "^(?:" + "|".join(f"{p}-[0-9a-f]{{{n}}}" for p, n in ID_HEX_DIGITS.items()) + "|[0-9a-f]{16})$",
    re.IGNORECASE,
)

# Cc control, Cf format (bidi overrides, zero-width), Cs surrogates, Co private use, Cn unassigned,
# Zl/Zp line and paragraph separators: none of them belongs in a name a listing shows.
_REFUSED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def looks_like_id(ref: str) -> bool:
    """Whether ``ref`` has the shape of a server-made id: such a reference is looked up by id only."""
    return bool(ID_RE.match(ref))


def name_problem(name: str, max_length: int = MAX_NAME) -> str | None:
    """What is wrong with ``name`` as a name, or None when it is usable."""
    if not name.strip():
        return f"empty; give 1 to {max_length} characters"
    if name != name.strip():  # " memo" and "memo" look the same in a listing
        return "it starts or ends with a space; remove it"
    if len(name) > max_length:
        return f"{len(name)} characters; give at most {max_length}"
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if category in _REFUSED:
            return (
                f"character {i + 1} is U+{ord(ch):04X} ({category}, a control, format or separator "
                "character); use printable text"
            )
    if looks_like_id(name):
        return (
            f"{name!r} looks like an id (ids are {', '.join(p + '-…' for p in ID_PREFIXES)} or 16 hex "
            "digits); pick a name that does not, e.g. add a word"
        )
    return None


def check_name(name: object, noun: str, max_length: int = MAX_NAME) -> str:
    """``name`` if it is a usable name for a ``noun`` (e.g. "dataset"); a ConfigError (→ 422, exit 2)
    saying what is wrong with it and what to give instead otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"{noun} name: expected a string, got {type(name).__name__}.")
    problem = name_problem(name, max_length)
    if problem:
        raise ConfigError(f"{noun} name: {problem}.")
    return name


def name_from_file(stem: str, fallback: str = "dataset") -> str:
    """A usable name made from a file's name when the user gave none: refused characters dropped, cut to
    the length limit, and an id-shaped stem (``ds-0123456789ab.jsonl``) given a word so it cannot pass for an
    id. A name the user typed is checked instead (``check_name``): only a derived one is repaired."""
    kept = "".join(ch for ch in stem if unicodedata.category(ch) not in _REFUSED).strip()
    name = kept[:MAX_NAME].strip() or fallback
    if looks_like_id(name):
        name = f"{name[: MAX_NAME - len('-upload')]}-upload"
    return name


def _valid_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# The rule as a pydantic type, for request bodies and specs: a bad name is a 422 with its field's location.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_valid_name)]
