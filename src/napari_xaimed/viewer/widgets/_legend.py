"""A legend in a dock: one colour swatch and name per label value of a Labels layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from napari_xaimed.viewer.widgets._base import region_names

#: At most this many entries are drawn; the rest are counted in the note.
MAX_ENTRIES = 16


def _hex(rgba: Any) -> str:
    r, g, b = (int(round(255 * float(c))) for c in np.asarray(rgba, float)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def layer_entries(layer: Any, names: Mapping[int, str] | None = None,
                  values: Sequence[int] | None = None) -> list[tuple[int, str, str]]:
    """``(value, colour "#rrggbb", name)`` of each label value of a Labels layer, as the layer
    draws it (``layer.get_color``); names from ``names``, else the layer's ``features``
    (``name`` column), else ``"label <value>"``. ``values`` default: the named values."""
    names = dict(names or region_names(layer) or {})
    names.pop(0, None)
    chosen = sorted(names) if values is None else [int(v) for v in values if int(v) != 0]
    return [(v, _hex(layer.get_color(v)), names.get(v, f"label {v}")) for v in chosen]


class Legend(QWidget):
    """Swatches and names; :attr:`entries` holds ``(colour, name)`` as shown."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[tuple[str, str]] = []
        self._title = QLabel(title)
        self._note = QLabel("")
        self._note.setWordWrap(True)
        self._grid = QGridLayout()
        self._grid.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._title)
        layout.addLayout(self._grid)
        layout.addWidget(self._note)
        self.setVisible(False)

    def set_entries(self, entries: Sequence[tuple[str, str]], title: str | None = None,
                    note: str = "") -> None:
        """Show ``(colour, name)`` pairs (the first :data:`MAX_ENTRIES`); empty hides it."""
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.entries = list(entries)
        shown = self.entries[:MAX_ENTRIES]
        for i, (colour, name) in enumerate(shown):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(f"background-color: {colour}; border: 1px solid #888;")
            text = QLabel(name)
            text.setWordWrap(True)
            self._grid.addWidget(swatch, i // 2, 2 * (i % 2))
            self._grid.addWidget(text, i // 2, 2 * (i % 2) + 1)
        more = len(self.entries) - len(shown)
        self._note.setText(" ".join(t for t in (note, f"(and {more} more)" if more > 0 else "")
                                    if t))
        if title is not None:
            self._title.setText(title)
        self.setVisible(bool(self.entries) or bool(note))

    def clear(self) -> None:
        self.set_entries([])
