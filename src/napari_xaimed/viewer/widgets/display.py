"""The display dock: radiological or neurological views, and contrast presets for an image.

The convention switch drives :func:`napari_xaimed.viewer.orientation.orientation_display`
(camera and orientation letters; data and world coordinates untouched). The contrast buttons
set the selected Image layer's ``contrast_limits`` from :mod:`napari_xaimed.io.contrast`: the
window its file asks for, a CT preset, or its 0.5-99.5 percentiles.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QGridLayout, QLabel, QPushButton, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.contrast import CT_PRESETS, percentile_range, preset_range
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.orientation import CONVENTIONS, orientation_display
from napari_xaimed.viewer.widgets._base import XaimedWidget

FILE = "file window"
PERCENTILE = "percentiles"


def contrast_for(layer: Any, choice: str) -> tuple[float, float]:
    """The contrast limits of ``choice`` (a :data:`~napari_xaimed.io.contrast.CT_PRESETS` name,
    ``"file window"`` or ``"percentiles"``) for an Image layer.

    Raises
    ------
    XaimedError
        For ``"file window"`` when the layer's file gave none.
    """
    if choice == FILE:
        found = ((layer.metadata or {}).get("display") or {}).get("file_range")
        if not found:
            raise XaimedError(f"{layer.name!r} has no display window from its file (DICOM "
                              "WindowCenter/WindowWidth or NIfTI cal_min/cal_max): pick a preset "
                              "or the percentiles.")
        return float(found[0]), float(found[1])
    if choice == PERCENTILE:
        from napari_xaimed.viewer.layers import _sample

        data = layer.data
        return percentile_range(_sample(data) if is_lazy(data) else data)
    return preset_range(choice)


class DisplayWidget(XaimedWidget):
    """Orientation convention and contrast presets (a napari-xaimed dock like the others:
    it scrolls and joins their tab group)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.display = orientation_display(napari_viewer)
        self.convention = QComboBox()
        self.convention.addItems(list(CONVENTIONS))
        self.convention.setCurrentText(self.display.convention)
        self.convention.setToolTip("Radiological: the patient's right on the screen's left "
                                   "(axial, coronal); neurological: on the right.")
        self.convention.currentTextChanged.connect(self.display.set_convention)
        form = QFormLayout()
        form.addRow("View", self.convention)

        self.buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        names = [FILE, *CT_PRESETS, PERCENTILE]
        for i, name in enumerate(names):
            button = QPushButton(name)
            if name in CT_PRESETS:
                centre, width = CT_PRESETS[name]
                button.setToolTip(f"CT window {centre:g}/{width:g} HU")
            button.clicked.connect(lambda _=False, n=name: self.apply_contrast(n))
            self.buttons[name] = button
            grid.addWidget(button, i // 3, i % 3)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = self._layout
        layout.addLayout(form)
        layout.addWidget(QLabel("Contrast of the selected image"))
        layout.addLayout(grid)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def apply_contrast(self, choice: str) -> None:
        """Set the selected Image layer's contrast to ``choice``; problems go to the status
        line and a napari notification."""
        layer = self.viewer.layers.selection.active
        from napari.layers import Image

        if not isinstance(layer, Image):
            self._say("Select an Image layer first.")
            return
        try:
            low, high = contrast_for(layer, choice)
        except XaimedError as exc:
            self._say(str(exc))
            return
        layer.contrast_limits_range = (min(low, layer.contrast_limits_range[0]),
                                       max(high, layer.contrast_limits_range[1]))
        layer.contrast_limits = (low, high)
        self.status.setText(f"{layer.name}: {choice} {low:g} to {high:g}")

    def _say(self, message: str) -> None:
        from napari.utils.notifications import show_warning

        self.status.setText(message)
        show_warning(message)
