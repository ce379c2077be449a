"""One rank of a DDP training run, for tests: the recipe `tuneforge train` runs, plus this rank's trained
weights saved at the end into WEIGHTS_DIR/rank-N.pt (rank 0 alone writes the job folder, so the other
ranks' weights are otherwise never seen).

    python tests/support/rank_train.py SPEC.yaml OUTPUT WEIGHTS_DIR   (started by jobs/ranks.py)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from transformers import TrainerCallback


class SaveWeights(TrainerCallback):
    def __init__(self, target: Path):
        self.target = target

    def on_train_end(self, args, state, control, model=None, **kw):
        import torch

        trained = {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}
        torch.save(trained, self.target)


def main(spec_path: str, output: str, weights_dir: str) -> None:
    from tuneforge.spec import load_spec
    from tuneforge.train.run import run_training

    target = Path(weights_dir) / f"rank-{os.environ.get('RANK', '0')}.pt"
    run_training(load_spec(Path(spec_path), []), output, callbacks=[SaveWeights(target)])


if __name__ == "__main__":
    main(*sys.argv[1:4])
