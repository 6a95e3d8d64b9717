"""An oblique phantom with markers placed in patient coordinates, as NIfTI (nibabel) and as a
DICOM series (pydicom), for the orientation tests.

The intensities are a function of the RAS position of each voxel centre, so the markers sit at
the same place in the patient whatever the file's grid: anterior (1000) 40 mm in front of the
centre, the patient's right (500) 40 mm to the right, superior (750) 24 mm above, in a body of
100 (radius 60 mm); air -1000 around it (so it reads as an image, not a label map). The
axial plane S = 0 goes through the first two.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

ANTERIOR, SUPERIOR, RIGHT, BODY = 1000, 750, 500, 100
SHAPE = (13, 48, 48)  # (z, y, x)
ZOOMS_XYZ = (3.0, 3.0, 4.0)
ANGLE = np.deg2rad(25.0)  # about the S axis


def oblique_affine(angle: float = ANGLE) -> np.ndarray:
    """RAS affine: voxel axes turned ``angle`` about S, centred on the patient's origin."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(ZOOMS_XYZ)
    centre = (np.array(SHAPE[::-1]) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def phantom(affine: np.ndarray) -> np.ndarray:
    """int16 ``(z, y, x)`` voxels of the phantom on the grid of ``affine``."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    ijk = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    r, a, s = np.moveaxis(ijk @ affine.T, -1, 0)[:3]
    data = np.full(SHAPE, -1000, np.int16)
    data[(r**2 + a**2 < 60**2) & (np.abs(s) < 22)] = BODY
    data[(r**2 + (a - 40) ** 2 < 8**2) & (np.abs(s) < 6)] = ANTERIOR
    data[((r - 40) ** 2 + a**2 < 8**2) & (np.abs(s) < 6)] = RIGHT
    data[(r**2 + a**2 < 8**2) & (np.abs(s - 24) < 5)] = SUPERIOR
    return data


def write_nifti(path: Path, affine: np.ndarray | None = None) -> Path:
    """The phantom as NIfTI with ``cal_min``/``cal_max`` 0/1000."""
    affine = oblique_affine() if affine is None else affine
    img = nib.Nifti1Image(np.transpose(phantom(affine)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1000.0
    nib.save(img, str(path))
    return path


def write_dicom(folder: Path, affine: np.ndarray | None = None) -> Path:
    """The phantom as a CT series, one pydicom file per slice, with ImageOrientationPatient,
    ImagePositionPatient (LPS) and the window 500/1000 (display range 0 to 1000)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    affine = oblique_affine() if affine is None else affine
    data = phantom(affine)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3]
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = lps[:, 0] / zooms[0], lps[:, 1] / zooms[1]
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(SHAPE[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.PatientName, ds.PatientID = "Phantom^Oblique", "0"
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps @ np.array([0.0, 0.0, k, 1.0])]
        ds.PixelSpacing = [f"{zooms[1]:g}", f"{zooms[0]:g}"]  # row spacing, column spacing
        ds.SliceThickness = f"{zooms[2]:g}"
        ds.Rows, ds.Columns = SHAPE[1], SHAPE[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.WindowCenter, ds.WindowWidth = "500", "1000"
        ds.PixelData = np.ascontiguousarray(data[k]).tobytes()  # rows (j) by columns (i)
        ds.save_as(folder / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder
