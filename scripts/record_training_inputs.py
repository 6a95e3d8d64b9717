"""Record the training inputs' statistics in the bundled models' configs, without retraining.

    python scripts/record_training_inputs.py

Regenerates the training volumes of the run each config records (``training``: its seed and
size) and writes their ``training_inputs`` (:mod:`napari_xaimed.models.domain`) into
``lesion_classifier.json`` and ``lesion_segmenter.json``. The weights are untouched, and the
configs' SHA-256 (``config_sha256``) does not count ``training_inputs``, so outputs recorded
before still rerun. The training scripts write the same record when they train.
"""

from __future__ import annotations

import json

from napari_xaimed.models import lesion_classifier, lesion_segmenter
from napari_xaimed.training import classifier, segmenter


def main() -> None:
    for model, training, size in ((lesion_classifier, classifier, "n_train"),
                                  (lesion_segmenter, segmenter, "n_volumes")):
        path = model.WEIGHTS.with_suffix(".json")
        config = json.loads(path.read_text())
        run = config["training"]
        config["training_inputs"] = training.training_inputs(run[size], run["seed"])
        path.write_text(json.dumps(config, indent=2) + "\n")
        print(f"{path.name}: {json.dumps(config['training_inputs'])}")


if __name__ == "__main__":
    main()
