"""Worker entry point: token statistics and the masked preview of a stored dataset, as one JSON line.

The control plane runs ``python -m tuneforge.cli.dataset_report DS_FOLDER [MODEL]`` after an upload: counting
tokens needs a tokenizer (transformers), which the control plane never imports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def report(folder: Path, model: str | None) -> dict:
    from tuneforge.data.load import load_records
    from tuneforge.data.templates import resolve_chat_template
    from tuneforge.data.validate import build_report
    from tuneforge.models.file_tokenizer import load_counting_tokenizer
    from tuneforge.settings import get_settings

    meta = json.loads((folder / "dataset.json").read_text())
    loaded = load_records(folder / "files", meta.get("format"), meta.get("mapping") or None)
    name = model or get_settings().default_model
    tokenizer = load_counting_tokenizer(name)
    result = build_report(loaded, tokenizer, resolve_chat_template(tokenizer, "auto"), 1024, preview=2)
    previews = [[{"text": text, "trained": trained} for text, trained in p] for p in result.previews]
    return {"tokenizer": name, "stats": result.stats, "masked_preview": previews}


def main() -> None:
    folder = Path(sys.argv[1])
    model = sys.argv[2] if len(sys.argv) > 2 else None
    sys.stdout.write(json.dumps(report(folder, model), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
