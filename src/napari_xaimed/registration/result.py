"""What a registration returns: :class:`RegistrationResult`, everything on the fixed grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_volume
from napari_xaimed.io.grid import Grid, same_grid
from napari_xaimed.registration.fields import (
    displacement_vectors,
    jacobian_summary,
    resample,
    sample_field,
    warped_grid,
)
from napari_xaimed.registration.quality import (
    dice_per_label,
    mutual_information,
    ncc,
    target_registration_error,
)

Vec3 = tuple[float, float, float]


@dataclass
class RegistrationResult:
    """A registration's outputs, all on the fixed grid.

    Attributes
    ----------
    warped : numpy.ndarray
        The moving image resampled into the fixed space (ANTs' linear interpolation).
    displacement : numpy.ndarray
        ``(z, y, x, 3)`` mm, pull-back: the fixed point ``p`` comes from ``p + u(p)`` in the
        moving image; the affine and deformable transforms composed into one field.
    jacobian : numpy.ndarray
        Determinant of the Jacobian of ``p -> p + u(p)``, sign kept (<= 0: folded).
    metrics : dict
        Quality before and after (see :meth:`quality`).
    """

    warped: np.ndarray
    displacement: np.ndarray
    jacobian: np.ndarray
    transform: str
    fixed_spacing: Vec3
    fixed_origin: Vec3
    moving_spacing: Vec3
    moving_origin: Vec3
    moving_shape: tuple[int, int, int]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    transform_files: list[str] = field(default_factory=list)

    @property
    def folded(self) -> np.ndarray:
        """Voxels where the mapping folds (Jacobian determinant <= 0), as uint8 0/1."""
        return (self.jacobian <= 0).astype(np.uint8)

    def apply(self, array: np.ndarray, interpolation: str = "linear", fill: float = 0.0
              ) -> np.ndarray:
        """Carry a volume on the moving grid (labels, heatmap, image) into the fixed space.

        ``interpolation``: ``"linear"`` for images and heatmaps, ``"label"`` (label-preserving
        linear: each voxel takes the label with the largest interpolated share) or
        ``"nearest"`` for label maps.
        """
        array = as_volume(array, "the volume to warp", allow_nan=interpolation != "label")
        if array.shape != self.moving_shape:
            raise XaimedError(
                f"the volume to warp has shape {array.shape}, the moving image {self.moving_shape}:"
                " only volumes on the moving image's grid can be carried along."
            )
        return resample(array, self.jacobian.shape, self.displacement,
                        fixed_spacing=self.fixed_spacing, fixed_origin=self.fixed_origin,
                        moving_spacing=self.moving_spacing, moving_origin=self.moving_origin,
                        interpolation=interpolation, fill=fill)

    def before(self, array: np.ndarray, interpolation: str = "linear") -> np.ndarray:
        """A moving-grid volume on the fixed grid with no registration (world coordinates)."""
        array = np.asarray(array)
        shape = self.jacobian.shape
        if array.shape == shape and same_grid(Grid(shape, self.fixed_spacing, self.fixed_origin),
                                              Grid(shape, self.moving_spacing,
                                                   self.moving_origin)):
            return array  # one grid (within the tolerances of grid.py): nothing to resample
        return resample(np.asarray(array), self.jacobian.shape, None,
                        fixed_spacing=self.fixed_spacing, fixed_origin=self.fixed_origin,
                        moving_spacing=self.moving_spacing, moving_origin=self.moving_origin,
                        interpolation=interpolation)

    def vectors(self, step: int = 8, min_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Vectors layer data (voxel units, layer ``scale`` = fixed spacing) and lengths in mm;
        see :func:`~napari_xaimed.registration.fields.displacement_vectors`."""
        return displacement_vectors(self.displacement, step, self.fixed_spacing, min_mm)

    def grid(self, grid_mm: float = 5.0, line_mm: float | None = None) -> np.ndarray:
        """A moving-space grid seen through the field (see
        :func:`~napari_xaimed.registration.fields.warped_grid`)."""
        return warped_grid(self.displacement, self.fixed_spacing, self.fixed_origin,
                           grid_mm=grid_mm, line_mm=line_mm)

    def quality(self, fixed: np.ndarray, moving: np.ndarray, *,
                fixed_labels: np.ndarray | None = None, moving_labels: np.ndarray | None = None,
                fixed_points: np.ndarray | None = None, moving_points: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> dict[str, Any]:
        """Quality figures before (moving taken as is, in world coordinates) and after.

        NCC and mutual information of the fixed image with the moving one (over ``mask`` of
        the fixed grid when given); Jacobian min/max/mean/std and folded share; Dice per label
        when both label maps are given (the moving labels carried with ``"label"``
        interpolation); target registration error (mm) when corresponding landmarks in world
        mm are given.
        """
        fixed = np.asarray(fixed)
        if fixed.shape != self.jacobian.shape:
            raise XaimedError(f"the fixed image {fixed.shape} is not on this result's grid "
                              f"{self.jacobian.shape}.")
        before = self.before(moving)
        out: dict[str, Any] = {
            "ncc_before": ncc(fixed, before, mask), "ncc_after": ncc(fixed, self.warped, mask),
            "mi_before": mutual_information(fixed, before, mask),
            "mi_after": mutual_information(fixed, self.warped, mask),
            **jacobian_summary(self.jacobian, mask),
        }
        if (fixed_labels is None) != (moving_labels is None):
            raise XaimedError("Dice needs both label maps: give fixed_labels and moving_labels.")
        if fixed_labels is not None:
            fixed_labels = np.asarray(fixed_labels)
            out["dice_before"] = dice_per_label(fixed_labels, self.before(moving_labels, "label"))
            out["dice_after"] = dice_per_label(fixed_labels, self.apply(moving_labels, "label"))
        if (fixed_points is None) != (moving_points is None):
            raise XaimedError("TRE needs corresponding landmarks on both images: give "
                              "fixed_points and moving_points.")
        if fixed_points is not None:
            fixed_points = np.atleast_2d(np.asarray(fixed_points, np.float64))
            at = sample_field(self.displacement, fixed_points, self.fixed_spacing,
                              self.fixed_origin)
            for when, disp in (("before", None), ("after", at)):
                for key, value in target_registration_error(fixed_points, moving_points,
                                                            disp).items():
                    out[key.replace("tre_", f"tre_{when}_")] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Parameters, geometry, timings and quality figures (no arrays)."""
        return {"transform": self.transform, "params": self.params,
                "fixed_spacing": self.fixed_spacing, "fixed_origin": self.fixed_origin,
                "moving_spacing": self.moving_spacing, "moving_origin": self.moving_origin,
                "seconds": self.seconds, "timings": self.timings, "metrics": self.metrics,
                "transform_files": self.transform_files}
