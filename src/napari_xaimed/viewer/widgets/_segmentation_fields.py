"""The segmentation dock's form sections: the classical methods' fields and the model's.

Each builder returns ``{parameter name: widget}`` in the order the form shows them; the names are
the core's parameter names (:func:`~napari_xaimed.segmentation.method_params`).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, SpinBox
from napari.layers import Labels

from napari_xaimed.models.loading import BUNDLED_SEGMENTER
from napari_xaimed.viewer.widgets._base import layer_picker

NO_SPLIT = "none"


def classical_fields(viewer: Any) -> dict[str, Any]:
    """Threshold, Otsu and the ANTs tissue classes, with the mask clean-up and instances."""
    return {
        "value": FloatSpinBox(label="threshold", value=0.5, min=-1e6, max=1e6, step=0.05),
        "percentile": FloatSpinBox(label="percentile", value=95.0, min=0.0, max=100.0),
        # 3, not the core's 2: the brightest of three classes is the bright structures
        # (lesions: Dice 0.97 on the lesion sample), two split the body from the air (0.05)
        "classes": SpinBox(label="Otsu classes", value=3, min=2, max=5,
                           tooltip="otsu keeps the brightest multi-Otsu class: 3 finds bright "
                                   "structures (lesions, contrast), 2 the body against the air"),
        "n_classes": SpinBox(label="tissue classes", value=3, min=2, max=10),
        "mask": layer_picker(viewer, Labels, "mask", nullable=True),
        "mrf": FloatSpinBox(label="MRF weight", value=0.1, min=0.0, max=10.0, step=0.05,
                            tooltip="Spatial smoothing of the classes; higher is smoother"),
        "iterations": SpinBox(label="iterations", value=5, min=1, max=100),
        "reproducible": CheckBox(label="reproducible (1 thread)", value=True),
        "smoothing_mm": FloatSpinBox(label="smoothing (mm)", value=0.0, min=0.0, max=20.0,
                                     step=0.5),
        "opening_mm": FloatSpinBox(label="opening radius (mm)", value=0.0, min=0.0, max=50.0,
                                   step=0.5),
        "fill_holes": CheckBox(label="fill holes", value=False),
        "instances": CheckBox(label="label instances", value=True),
        "min_size_mm3": FloatSpinBox(label="min size (mm³)", value=0.0, min=0.0, max=1e7,
                                     step=10.0),
        "connectivity": ComboBox(label="connectivity", choices=[6, 18, 26], value=26),
        "split": ComboBox(label="split touching", choices=[NO_SPLIT, "watershed"],
                          value=NO_SPLIT),
        "min_distance_mm": FloatSpinBox(label="min distance (mm)", value=5.0, min=0.1,
                                        max=500.0, step=0.5),
    }


def model_fields() -> dict[str, Any]:
    """The deep model: where it comes from and MONAI's sliding-window settings."""
    return {
        "model": ComboBox(label="model", choices=[BUNDLED_SEGMENTER, "file", "folder"],
                          value=BUNDLED_SEGMENTER),
        "roi_size": SpinBox(label="window (voxels, 0 = auto)", value=0, min=0, max=1024),
        "overlap": FloatSpinBox(label="window overlap", value=0.25, min=0.0, max=0.95,
                                step=0.05),
        "blend": ComboBox(label="blending", choices=["gaussian", "constant"], value="gaussian"),
        "sw_batch_size": SpinBox(label="windows per pass (0 = auto)", value=0, min=0, max=256),
        "output": ComboBox(label="output", choices=["softmax", "sigmoid"], value="softmax"),
        "threshold": FloatSpinBox(label="sigmoid threshold", value=0.5, min=0.0, max=1.0,
                                  step=0.05),
        "largest_component": CheckBox(label="keep largest component", value=False),
        "device": ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto"),
    }


def model_paths() -> tuple[FileEdit, FileEdit]:
    """The model file and model folder fields (shown for the model sources that need them)."""
    return (FileEdit(label="model file", mode="r",
                     tooltip="TorchScript, or a state dict with <name>.json beside it"),
            FileEdit(label="model folder", mode="d",
                     tooltip="a MONAI bundle, or a trained nnU-Net v2 result folder "
                             "(plans.json, dataset.json, fold_k/)"))
