"""Panoptica's spine pair as small synthetic NIfTI files, shared by the one-grid tests.

The pair is 0.586 x 0.586 x 3.3 mm, voxel i along -y, j along -z, k along +x (RAS); its
prediction's origin lies 0.00064 mm off along y and z after a file round trip.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SPINE_AFFINE = np.array([[0.0, 0.0, 3.3, -12.2353515625],
                         [-0.58594, 0.0, 0.0, 153.2694091796875],
                         [0.0, -0.58594, 0.0, 202.25729370117188],
                         [0.0, 0.0, 0.0, 1.0]])
VOXEL = 0.58594


def spine_labels(shape: tuple[int, int, int] = (24, 20, 6)) -> np.ndarray:
    """Three 'vertebrae' (labels 1-3), in NIfTI (i, j, k) order."""
    data = np.zeros(shape, np.uint8)
    for label, j in enumerate((3, 9, 15), start=1):
        data[6:18, j:j + 4, 1:5] = label
    return data


def shifted(affine: np.ndarray, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0
            ) -> np.ndarray:
    """``affine`` with its origin moved by ``(dx, dy, dz)`` mm."""
    out = affine.copy()
    out[:3, 3] += (dx, dy, dz)
    return out


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """A NIfTI with exactly this affine as its sform and qform (nibabel, float32 header)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_spine(path: Path, data: np.ndarray, dy: float = 0.0, dz: float = 0.0) -> Path:
    """``data`` on the spine pair's grid, its origin moved by ``dy`` and ``dz`` mm."""
    return write_nifti(path, data, shifted(SPINE_AFFINE, dy=dy, dz=dz))
