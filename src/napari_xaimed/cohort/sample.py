"""A small synthetic cohort on disk, for trying the cohort mode and for its tests."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_xaimed._core.errors import XaimedError


def write_sample_cohort(folder: str | Path, n_cases: int = 10, *, kind: str = "evaluation",
                        shape: tuple[int, int, int] = (48, 48, 48),
                        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                        seed: int = 0) -> Path:
    """Write ``n_cases`` synthetic cases as NIfTI files and their case list.

    Parameters
    ----------
    folder : str or pathlib.Path
        Created if needed; files go to ``folder/<case>_*.nii.gz`` and the list to
        ``folder/cases.csv`` with paths relative to it.
    n_cases : int
    kind : {"evaluation", "attribution"}
        ``"evaluation"``: semantic reference and prediction with a core part
        (:func:`napari_xaimed.samples.panoptic_pair`: parts ``{"lesion": {"thing": [1, 2],
        "parts": {"core": [2]}}}``). ``"attribution"``: a lesion image and its lesion mask
        (:func:`napari_xaimed.samples.lesion_volume`, at least one lesion each).
    shape, spacing : tuple
    seed : int
        Case ``i`` uses ``seed + i``.

    Returns
    -------
    pathlib.Path
        The case list.
    """
    from napari_xaimed.io import write_volume
    from napari_xaimed.samples import lesion_volume, panoptic_pair

    if kind not in ("evaluation", "attribution"):
        raise XaimedError(f"kind must be 'evaluation' or 'attribution', got {kind!r}.")
    if n_cases < 1:
        raise XaimedError(f"n_cases must be at least 1, got {n_cases}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_cases):
        case = f"case{i:03d}"
        if kind == "evaluation":
            pair = panoptic_pair(shape, spacing, n_things=6, radius_mm=(3.0, 6.0), seed=seed + i)
            write_volume(folder / f"{case}_ref.nii.gz", pair.reference_semantic, spacing,
                         is_label=True)
            write_volume(folder / f"{case}_pred.nii.gz", pair.prediction_semantic, spacing,
                         is_label=True)
            rows.append({"case_id": case, "reference": f"{case}_ref.nii.gz",
                         "prediction": f"{case}_pred.nii.gz"})
        else:
            sample = lesion_volume(shape, spacing, n_lesions=1 + i % 2, seed=seed + i)
            write_volume(folder / f"{case}_image.nii.gz", sample.image, spacing)
            write_volume(folder / f"{case}_mask.nii.gz", sample.mask.astype("uint8"), spacing,
                         is_label=True)
            rows.append({"case_id": case, "image": f"{case}_image.nii.gz",
                         "mask": f"{case}_mask.nii.gz"})
    path = folder / "cases.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
