"""Where the bundled networks' weights (and their JSON configs) ship: ``models/weights``."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: the bundled lesion classifier (:mod:`napari_xaimed.models.lesion_classifier`)
CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "lesion_classifier.pt"
#: the bundled lesion segmentation network (:mod:`napari_xaimed.models.lesion_segmenter`)
SEGMENTER_WEIGHTS = WEIGHTS_DIR / "lesion_segmenter.pt"
