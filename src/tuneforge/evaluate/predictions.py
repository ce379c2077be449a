"""Score predictions that already exist: no model needed.

Reads LLaMA-Factory's ``generated_predictions.jsonl`` (``prompt``, ``predict``, ``label``) and
tuneforge's own ``predictions.jsonl`` (``prompt``, ``reference``, ``prediction`` and, with
--compare-base, ``prediction_base``) through the bounded dataset readers.
"""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.load import LoadedDataset
from tuneforge.data.readers import read_rows
from tuneforge.errors import Problem

from .metrics import check_metrics, mean_scores, pair_scores

# (prediction field, reference field) of each known predictions file, and the column a result names
SHAPES = {"llamafactory": ("predict", "label"), "tuneforge": ("prediction", "reference")}


def read_predictions(path: Path) -> tuple[str, dict[str, list[str]], list[str]]:
    """(shape, {column: predictions}, references); every problem of the file raised at once."""
    result = read_rows(Path(path), None)
    errors = list(result.errors)
    shape = None
    if result.rows:
        first = result.rows[0].data
        shape = next((s for s, (p, r) in SHAPES.items() if p in first and r in first), None)
        if shape is None:
            errors.append(
                Problem(
                    f"not a predictions file: expected {{'predict', 'label'}} (LLaMA-Factory's "
                    f"generated_predictions.jsonl) or {{'prediction', 'reference'}} (tuneforge eval's "
                    f"predictions.jsonl); the first record has {sorted(first)[:8]}.",
                    file=result.rows[0].file,
                    line=result.rows[0].line,
                )
            )
    columns: dict[str, list[str]] = {}
    references: list[str] = []
    if shape is not None:
        pred_key, ref_key = SHAPES[shape]
        # tuneforge's file may also hold the base model's answers (eval --compare-base)
        keys = [pred_key] + (["prediction_base"] if "prediction_base" in result.rows[0].data else [])
        columns = {k: [] for k in keys}
        for row in result.rows:
            for key in (ref_key, *keys):
                value = row.data.get(key)
                if not isinstance(value, str):
                    got = "nothing" if value is None else type(value).__name__
                    errors.append(
                        Problem(
                            f"expected {key!r} (string); got {got}.",
                            file=row.file,
                            line=row.line,
                            record=row.index + 1,
                            field=key,
                        )
                    )
                    value = ""
                (references if key == ref_key else columns[key]).append(value)
    LoadedDataset(Path(path), None, None, errors=errors).raise_for_errors()
    return shape, columns, references


def score_predictions(path: Path, metrics: str = "tuneforge") -> dict:
    """Mean ROUGE-1/2/L and BLEU-4 of each predictions column; per-pair scores under ``pairs``."""
    check_metrics(metrics)
    shape, columns, references = read_predictions(path)
    results: dict = {"predictions": str(path), "format": shape, "metrics": metrics, "models": {}, "pairs": {}}
    for column, predictions in columns.items():
        scores = pair_scores(predictions, references, metrics)
        results["models"][column] = {**mean_scores(scores), "samples": len(scores)}
        results["pairs"][column] = scores
    return results
