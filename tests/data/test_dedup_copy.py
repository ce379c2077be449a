"""``datasets dedup`` of every kind the store holds: KTO feedback and GRPO prompt sets too, each copy read
back by its kind's canonical format as the records it was made from."""

from __future__ import annotations

import pytest

from tests.conftest import write
from tuneforge.data.dedup_copy import CANONICAL_FORMAT, deduplicated_copy
from tuneforge.data.formats import FORMATS
from tuneforge.data.store import datasets_root, read_stored_records, store_path


def test_every_stored_kind_has_a_canonical_format():
    assert {f.kind for f in FORMATS.values()} == set(CANONICAL_FORMAT)
    assert all(FORMATS[CANONICAL_FORMAT[f.kind]].kind == f.kind for f in FORMATS.values())


@pytest.mark.parametrize(
    "record",
    [
        lambda i: {"system": "Brief.", "prompt": f"q {i % 3}?", "completion": "yes", "label": i % 3 == 0},
        lambda i: {"prompt": f"what is {i % 3} plus one?", "answer": str(i % 3 + 1)},
    ],
    ids=["kto", "grpo-prompts"],
)
def test_dedup_copies_feedback_and_prompt_sets(tmp_path, record):
    meta, _ = store_path(write(tmp_path / "set.json", [record(i) for i in range(6)]), "set")
    clean, report, new = deduplicated_copy("set", "clean")
    assert new and (clean["name"], clean["kind"], clean["records"]) == ("clean", meta["kind"], 3)
    assert report["exact"]["count"] == 3
    stored = read_stored_records(datasets_root() / meta["id"])
    assert read_stored_records(datasets_root() / clean["id"]) == stored[:3]


def test_a_copy_whose_records_are_stored_already_says_so_through_the_cli(tmp_path):
    """Run twice, the second copy holds the very records of the first: the store keeps content once, so
    nothing named ``again`` exists afterwards, and the CLI says that instead of 'stored'."""
    from typer.testing import CliRunner

    from tuneforge.cli.main import app

    store_path(
        write(tmp_path / "set.json", [{"prompt": f"q {i % 2}?", "answer": "a"} for i in range(4)]), "set"
    )
    first, _, _ = deduplicated_copy("set", "clean")
    again, report, new = deduplicated_copy("set", "again")
    assert (
        not new and again["id"] == first["id"] and again["name"] == "clean" and report["exact"]["count"] == 2
    )
    out = CliRunner().invoke(app, ["datasets", "dedup", "set", "--into", "again2"])
    said = " ".join(out.output.split())  # as Rich wrapped it
    assert out.exit_code == 0 and "nothing new stored ('again2' not created)" in said, said
    assert f"the same records are stored as {first['id']} (clean" in said
    # --into is the user's string, printed as itself: "[/]" raised Rich's MarkupError (a traceback)
    out = CliRunner().invoke(app, ["datasets", "dedup", "set", "--into", "[/][bold]x"])
    assert out.exit_code == 0 and "('[/][bold]x' not created)" in " ".join(out.output.split()), out.output
