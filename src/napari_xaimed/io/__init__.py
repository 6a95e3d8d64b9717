"""Read and write volumes in numpy's axis order: NIfTI, NRRD, MetaImage and DICOM series.

Formats: NIfTI (``.nii``, ``.nii.gz``, through nibabel), NRRD (``.nrrd``, ``.nhdr``) and
MetaImage (``.mha``, ``.mhd``) through SimpleITK (:mod:`napari_xaimed.io.itk`), and DICOM series
(a folder, or one of its files; read only) through SimpleITK's GDCM reader
(:mod:`napari_xaimed.io.dicom`), enhanced multi-frame DICOM images and DICOM-SEG label maps
through highdicom (:mod:`napari_xaimed.io.dicom_frames`). :func:`read_volume` and
:func:`write_volume` pick the format from the suffix (a folder is DICOM).

NIfTI stores voxels as ``(x, y, z[, t, ...])``; napari and numpy index ``(z, y, x)``. Reading
reverses the axes (so a 4D ``(x, y, z, t)`` file becomes ``(t, z, y, x)``: the extra axis first),
and writing reverses them back, so a read-then-write round trip keeps voxels, spacing and affine.
NIfTI lengths are read in the header's unit (``xyzt_units``: mm, micron or meter;
``unknown`` taken as mm) and converted to mm, spacing and affine alike; files are written in mm.
The other formats index their voxels the same way (``(i, j, k)`` = ``(x, y, z)``), so one
phantom saved in any of them reads back as the same array.

**World frame.** :attr:`Volume.affine` is always the NIfTI-convention voxel-to-world matrix:
voxel indices in ``(i, j, k)`` = ``(x, y, z)`` order, world coordinates in mm in RAS (x to the
patient's right, y anterior, z superior). ITK formats and DICOM store LPS; they are converted
with ``diag(-1, -1, 1)``, so the same voxel has the same world coordinates whatever the file.
napari places a volume with ``scale`` = spacing, ``translate`` = :attr:`Volume.translate` (the
world position of voxel ``(0, 0, 0)`` expressed along the voxel axes, ``(z, y, x)``, mm) and
``affine`` = the direction cosines, so its world is the patient's RAS frame in ``(S, A, R)``
order (:mod:`napari_xaimed.viewer.orientation`). The full orientation also travels in the layer
metadata so that writing the layer back restores it.
"""

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.files import is_volume_path, read_volume, write_volume
from napari_xaimed.io.label_names import read_label_names
from napari_xaimed.io.lazy import is_lazy, read_zarr, write_zarr
from napari_xaimed.io.nifti import (
    NIFTI_MM_PER_UNIT,
    nifti_affine_mm,
    nifti_mm_per_unit,
    nifti_zooms_mm,
    volume_from_nifti,
)
from napari_xaimed.io.volume import (
    ITK_SUFFIXES,
    NIFTI_INTENT_LABEL,
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    affine_from_grid,
    grid_translate,
    is_nifti_path,
    read_sidecar,
    sidecar_path,
    to_json,
    volume_stem,
)

__all__ = [
    "ITK_SUFFIXES",
    "NIFTI_INTENT_LABEL",
    "NIFTI_MM_PER_UNIT",
    "NIFTI_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Volume",
    "XaimedError",
    "affine_from_grid",
    "grid_translate",
    "is_lazy",
    "is_nifti_path",
    "is_volume_path",
    "nifti_affine_mm",
    "nifti_mm_per_unit",
    "nifti_zooms_mm",
    "read_label_names",
    "read_sidecar",
    "read_volume",
    "read_zarr",
    "sidecar_path",
    "to_json",
    "volume_from_nifti",
    "volume_stem",
    "write_volume",
    "write_zarr",
]
