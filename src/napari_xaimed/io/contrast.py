"""Display contrast of a volume: the file's own window, CT presets, or robust percentiles.

What a radiologist expects when a scan opens, in this order:

1. the range the file asks for: a DICOM window (WindowCenter (0028,1050) / WindowWidth
   (0028,1051)) or NIfTI ``cal_min``/``cal_max`` (:attr:`~napari_xaimed.io.Volume.display_range`);
2. for a CT without one, the soft-tissue window (:data:`CT_PRESETS`);
3. otherwise (MR, synthetic data, computed maps) the 0.5-99.5 percentiles of the intensities,
   so a few extreme voxels (air outside a CT at -3000, a hot spot) do not flatten the image.

A window is ``(centre, width)`` as DICOM writes it; the displayed range is
``centre -/+ width / 2`` (the limits a viewer's contrast slider takes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

#: Common CT windows ``(centre, width)`` in Hounsfield units.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}
#: The window a CT opens with when its file gives none.
DEFAULT_CT_PRESET = "soft tissue"
#: Percentiles of the intensities used when nothing better is known.
PERCENTILES = (0.5, 99.5)


def window_range(centre: float, width: float) -> tuple[float, float]:
    """The displayed range ``(centre - width / 2, centre + width / 2)`` of a window.

    Raises
    ------
    XaimedError
        If the width is not a positive finite number.
    """
    centre, width = float(centre), float(width)
    if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0:
        raise XaimedError(f"A display window needs a finite centre and a positive width, got "
                          f"centre {centre:g} and width {width:g}.")
    return centre - width / 2, centre + width / 2


def preset_range(name: str) -> tuple[float, float]:
    """The displayed range of a CT preset of :data:`CT_PRESETS` (``"lung"``...)."""
    key = name.strip().lower()
    if key not in CT_PRESETS:
        raise XaimedError(f"No CT preset {name!r}: choose one of {', '.join(CT_PRESETS)}.")
    return window_range(*CT_PRESETS[key])


def dicom_window(centre: str, width: str) -> tuple[float, float] | None:
    """The displayed range of DICOM WindowCenter/WindowWidth values as their header text
    (``"40"``, or several as ``"40\\\\450"``: the first, the one DICOM calls the default);
    None when absent or unusable."""
    try:
        c = float(str(centre).split("\\")[0])
        w = float(str(width).split("\\")[0])
        return window_range(c, w)
    except (ValueError, XaimedError):
        return None


def percentile_range(data: Any, percentiles: tuple[float, float] = PERCENTILES
                     ) -> tuple[float, float]:
    """Robust limits: the given percentiles of the finite intensities (``(0, 1)`` for no
    finite voxel; the high limit at least ``low + 1`` for a constant image)."""
    values = np.asarray(data)
    if np.issubdtype(values.dtype, np.floating):
        values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return (low, high) if high > low else (low, low + 1.0)


def default_range(data: Any, display_range: tuple[float, float] | None = None,
                  modality: str = "") -> tuple[tuple[float, float], str]:
    """The contrast a volume opens with, and where it came from.

    Parameters
    ----------
    data : array-like
        The intensities (a subsample is enough for the percentiles).
    display_range : tuple of float, optional
        The file's own range (:attr:`~napari_xaimed.io.Volume.display_range`).
    modality : str
        DICOM Modality; ``"CT"`` without a file window opens with :data:`DEFAULT_CT_PRESET`.

    Returns
    -------
    (low, high), source
        ``source`` is ``"file"``, ``"CT soft tissue"`` or ``"percentiles 0.5-99.5"``.
    """
    if display_range is not None:
        low, high = (float(v) for v in display_range)
        if np.isfinite(low) and np.isfinite(high) and high > low:
            return (low, high), "file"
    if modality.strip().upper() == "CT":
        return preset_range(DEFAULT_CT_PRESET), f"CT {DEFAULT_CT_PRESET}"
    low_p, high_p = PERCENTILES
    return percentile_range(data), f"percentiles {low_p:g}-{high_p:g}"
