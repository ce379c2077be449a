"""The evaluation set against the training set, before a job starts: how much of it the model trains on.

One check for the worker (``tuneforge train``: an ``eval_overlap`` event, or a refusal) and the control
plane (a job refused before it is queued), so both read ``data.eval_overlap`` the same way.
"""

from __future__ import annotations

import logging

from tuneforge.errors import DataError, TuneforgeError
from tuneforge.spec import JobSpec

from .data import load_spec_records

log = logging.getLogger(__name__)


def check_eval_overlap(spec: JobSpec, train: list[dict], evaluation: list[dict]) -> dict | None:
    """The overlap report when it is past ``data.eval_overlap.max_share`` (None when it is not, or when
    there is no evaluation set); a DataError instead when the check is strict."""
    if not evaluation:
        return None
    from tuneforge.data.dedup import eval_overlap, overlap_message  # numpy: only when needed

    check = spec.data.eval_overlap
    report = eval_overlap(train, evaluation, check.jaccard)
    if report["overlapping"] <= check.max_share * report["eval_records"]:
        return None
    message = f"{overlap_message(report)} data.eval_overlap.max_share is {check.max_share}"
    if check.strict:
        raise DataError(
            f"{message} and data.eval_overlap.strict is on: the job is refused. Leave those records out of "
            "the evaluation set (with data.val_fraction, `tuneforge datasets dedup` removes the repeated "
            "records that land on both sides), raise max_share, or turn strict off."
        )
    log.warning("%s: eval metrics will flatter the model.", message)
    return report


# The control plane checks a strict spec inside the request that submits it: reading and MinHashing the
# records costs about 1 ms each on a busy 2-core machine, so past this many the request would hold its
# thread (and the caller) for tens of seconds. Then the worker checks at its start, with the same words.
IN_REQUEST_RECORDS = 10_000


def _records_to_read(spec: JobSpec) -> int | None:
    """How many records the check would read, from the stored datasets' metadata (not their records);
    None when a dataset's count is not known (not a stored dataset, or a ``records`` that is not a count):
    then nothing bounds the read, so the request leaves the check to the worker."""
    import json

    from tuneforge.data.store import find_dataset

    total = 0
    for ref in [*spec.data.train, *([spec.data.validation] if spec.data.validation else [])]:
        try:
            count = json.loads((find_dataset(ref.path) / "dataset.json").read_text()).get("records")
        except (TuneforgeError, OSError, ValueError, AttributeError):
            return None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return None  # a string made min() below a 500; a negative one let any size be read here
        total += min(count, ref.max_samples or count)
    return total


def strict_refusal(spec: JobSpec) -> str | None:
    """The control plane's check of a strict spec whose datasets are stored: why it is refused, or None.
    The records are read and split as the worker will (``load_spec_records``). Datasets of more than
    IN_REQUEST_RECORDS records, or of a count not known, are left to the worker's own check when it starts
    (None here)."""
    count = _records_to_read(spec)
    if count is None or count > IN_REQUEST_RECORDS:
        log.info("data.eval_overlap.strict: over %d records (or not counted), checked when the job starts",
                 IN_REQUEST_RECORDS)  # fmt: skip
        return None
    try:
        check_eval_overlap(spec, *load_spec_records(spec))
    except TuneforgeError as exc:
        return str(exc)
    return None
