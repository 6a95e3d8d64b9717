"""Train the bundled lesion segmentation network and write its weights and config into the package.

    python scripts/train_lesion_segmenter.py [--steps 400] [--n-volumes 24] [--seed 0]

Seeded: the same torch version and arguments give the same weights. Prints the mean Dice on
held-out sample volumes (seeds the training never saw), segmented the way users segment:
through ``segment_with_model`` with its default sliding windows.
"""

from __future__ import annotations

import argparse
import json

import torch

from napari_xaimed.models import lesion_segmenter
from napari_xaimed.training import segmenter as training

HELD_OUT = list(range(90_000, 90_020))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--n-volumes", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, record = training.train(args.n_volumes, args.steps, args.batch, args.seed)
    record["held_out_dice"] = round(training.held_out_dice(model, HELD_OUT), 4)
    record["held_out_seeds"] = [HELD_OUT[0], HELD_OUT[-1]]
    path = lesion_segmenter.WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    config = {**lesion_segmenter.CONFIG, "training": record,
              "training_inputs": training.training_inputs(args.n_volumes, args.seed)}
    path.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) and {path.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
