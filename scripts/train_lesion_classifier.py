"""Train the bundled lesion classifier and write its weights and config into the package.

    python scripts/train_lesion_classifier.py [--epochs 6] [--n-train 384] [--seed 0]

Seeded: the same torch version and arguments give the same weights. Prints the held-out
accuracy on sample volumes the training never saw.
"""

from __future__ import annotations

import argparse
import json

import torch

from napari_xaimed.models import lesion_classifier as lesion_model
from napari_xaimed.training import classifier as training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, record = training.train(args.n_train, args.epochs, args.seed)
    record["held_out_accuracy"] = training.accuracy(model, list(range(90_000, 90_200)))
    path = lesion_model.WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    config = {**lesion_model.CONFIG, "training": record,
              "training_inputs": training.training_inputs(args.n_train, args.seed)}
    path.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) and {path.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
