"""Synthetic volumes with known truth, for the demo, the tests and the benchmarks.

Every generator takes a ``seed`` and a size and returns the truth beside the data, so a result can
be checked against what is known rather than against another program's opinion:

- :func:`lesion_volume`: a textured body with 0..N bright lesions, their instance mask and the class
  (lesion present or not) a detector should predict;
- :func:`longitudinal_pair`: a prior (``moving``) and a current (``fixed``) scan of the same
  anatomy, the current one deformed by a known smooth displacement plus a small affine, with the
  displacement in the project's convention and organ label maps for Dice;
- :func:`panoptic_pair`: reference and prediction instance labels of things with a core part, with
  deliberate splits, merges, misses and false positives;
- :func:`mni152` and :func:`mni152_deformed`: a real brain, the MNI152 T1 template that ships
  inside nilearn (the optional ``[real]`` extra; nothing is downloaded), with its grey and white
  matter, and the template moved by a known smooth deformation.

Arrays are in ``(z, y, x)`` order and spacings in millimetres in the same order.
"""

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples._common import Shape3, Spacing3
from napari_xaimed.samples.lesion import LesionSample, lesion_volume
from napari_xaimed.samples.longitudinal import (
    LongitudinalSample,
    longitudinal_pair,
    smooth_displacement,
)
from napari_xaimed.samples.mni152 import (
    BRAIN_THRESHOLD,
    REAL_EXTRA,
    TISSUE_NAMES,
    MNI152DeformedSample,
    MNI152Sample,
    mni152,
    mni152_deformed,
)
from napari_xaimed.samples.panoptic import (
    PanopticSample,
    connected_instances,
    overlap_table,
    panoptic_pair,
)
from napari_xaimed.samples.phantom import Ellipsoid, Phantom, grid_points, random_phantom

__all__ = [
    "BRAIN_THRESHOLD",
    "REAL_EXTRA",
    "TISSUE_NAMES",
    "Ellipsoid",
    "LesionSample",
    "LongitudinalSample",
    "MNI152DeformedSample",
    "MNI152Sample",
    "PanopticSample",
    "Phantom",
    "Shape3",
    "Spacing3",
    "XaimedError",
    "connected_instances",
    "grid_points",
    "lesion_volume",
    "longitudinal_pair",
    "mni152",
    "mni152_deformed",
    "overlap_table",
    "panoptic_pair",
    "random_phantom",
    "smooth_displacement",
]
