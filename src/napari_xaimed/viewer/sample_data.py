"""npe2 sample-data contributions: the synthetic samples with their truth as layers.

Each puts napari's current viewer in radiological display first
(:func:`napari_xaimed.viewer.orientation.display_current_viewer`); the samples' voxel axes
``(z, y, x)`` are ``(S, A, R)``.
"""

from __future__ import annotations

import numpy as np

from napari_xaimed import samples
from napari_xaimed._core.provenance import provenance
from napari_xaimed.viewer.layers import LayerTuple, heatmap_layer, image_layer, labels_layer
from napari_xaimed.viewer.orientation import display_current_viewer, layer_affine


def _prov(kind: str, generator: str, seed: int, **params) -> dict:
    return provenance(kind, params={"generator": generator, "seed": seed, **params})


def lesion_layers(seed: int = 0) -> list[LayerTuple]:
    """Lesion volume (``"lesion ct"``) and its ground-truth lesion instances."""
    display_current_viewer()
    s = samples.lesion_volume(seed=seed)
    return [
        image_layer(s.image, "lesion ct", s.spacing,
                    provenance=_prov("sample", "lesion_volume", seed, label=s.label)),
        labels_layer(s.lesions, "lesion truth", s.spacing,
                     provenance=_prov("truth", "lesion_volume", seed)),
    ]


def longitudinal_layers(seed: int = 0) -> list[LayerTuple]:
    """Prior (moving) and current (fixed) scans, their organ labels and the true displacement."""
    display_current_viewer()
    s = samples.longitudinal_pair(seed=seed)
    magnitude = np.linalg.norm(s.displacement, axis=-1)
    return [
        image_layer(s.fixed, "current", s.spacing,
                    provenance=_prov("sample", "longitudinal_pair", seed, role="fixed")),
        image_layer(s.moving, "prior", s.spacing, visible=False,
                    provenance=_prov("sample", "longitudinal_pair", seed, role="moving")),
        labels_layer(s.fixed_labels, "current organs", s.spacing,
                     provenance=_prov("truth", "longitudinal_pair", seed, role="fixed")),
        labels_layer(s.moving_labels, "prior organs", s.spacing, visible=False,
                     provenance=_prov("truth", "longitudinal_pair", seed, role="moving")),
        heatmap_layer(magnitude, "true displacement mm [prior->current]", s.spacing,
                      signed=False, visible=False,
                      provenance=_prov("truth", "longitudinal_pair", seed, role="|displacement|")),
    ]


def panoptic_layers(seed: int = 0) -> list[LayerTuple]:
    """Reference and prediction instance labels with parts, with deliberate errors."""
    display_current_viewer()
    s = samples.panoptic_pair(seed=seed)
    return [
        labels_layer(s.reference, "reference", s.spacing,
                     provenance=_prov("truth", "panoptic_pair", seed, parts=s.parts)),
        labels_layer(s.prediction, "prediction", s.spacing,
                     provenance=_prov("sample", "panoptic_pair", seed, events=s.events)),
        labels_layer(s.reference_semantic, "reference parts", s.spacing, visible=False,
                     provenance=_prov("truth", "panoptic_pair", seed, parts=s.parts)),
        labels_layer(s.prediction_semantic, "prediction parts", s.spacing, visible=False,
                     provenance=_prov("sample", "panoptic_pair", seed, parts=s.parts)),
    ]


def mni152_layers(resolution: int = 2) -> list[LayerTuple]:
    """The MNI152 T1 template (nilearn, the ``[real]`` extra) in MNI coordinates, its reference
    tissue classes and nilearn's grey and white matter probabilities."""
    display_current_viewer()
    s = samples.mni152(resolution)

    def prov(kind: str, **params) -> dict:
        return provenance(kind, params={"generator": "mni152", "resolution": s.resolution,
                                        "source": "nilearn", **params})

    geometry = {"translate": s.translate, "affine": layer_affine(s.affine)}
    classes = {str(k): v for k, v in samples.TISSUE_NAMES.items()}
    return [
        image_layer(s.image, "MNI152 T1", s.spacing, **geometry, provenance=prov("sample")),
        labels_layer(s.tissue, "MNI152 tissue", s.spacing, **geometry, visible=False,
                     provenance=prov("truth", classes=classes)),
        heatmap_layer(s.gm_probability, "MNI152 GM probability", s.spacing, **geometry,
                      signed=False, visible=False, provenance=prov("truth", tissue="GM")),
        heatmap_layer(s.wm_probability, "MNI152 WM probability", s.spacing, **geometry,
                      signed=False, visible=False, provenance=prov("truth", tissue="WM")),
    ]
