"""A grid mismatch between two layers, and the signal that offers it to the docks (see
``_resample``, which shows the offer and runs it)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_xaimed._core.errors import XaimedError


class GridMismatch(XaimedError):
    """Two layers a dock pairs voxel by voxel do not lie on one grid.

    Attributes
    ----------
    layer, reference : napari layer
        The layer to resample, and the one whose grid it should take.
    """

    def __init__(self, message: str, layer: Any, reference: Any) -> None:
        super().__init__(message)
        self.layer, self.reference = layer, reference


class _Offers(QObject):
    """Carries each reported :class:`GridMismatch` to the docks (GUI thread)."""

    offered = Signal(object)


_OFFERS: _Offers | None = None


def offers() -> _Offers:
    """The one signal the docks listen to for resample offers."""
    global _OFFERS
    if _OFFERS is None:
        _OFFERS = _Offers()
    return _OFFERS
