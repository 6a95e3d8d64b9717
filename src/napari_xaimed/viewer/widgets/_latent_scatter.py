"""The Cases widget's scatter of the latent space: points coloured by a metadata column, a
click on one opens that case."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_xaimed.viewer.widgets._results import MIN_VIEW_HEIGHT


class LatentScatter(QWidget):
    """A scatter of the cases' projection; clicking a point calls ``on_point(index)``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 3.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(MIN_VIEW_HEIGHT)
        self.axes = self.figure.add_subplot()
        self.points: Any = None
        self.on_point: Any = None
        self.canvas.mpl_connect("pick_event", self._picked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def plot(self, xy: np.ndarray, values: Any, label: str, axes: tuple[str, str],
             highlight: list[int] | None = None) -> None:
        """Draw the points coloured by ``values`` (numbers: a colour scale; text: categories)
        and ring ``highlight``."""
        self.figure.clear()  # and the previous colour bar with it
        self.axes = self.figure.add_subplot()
        values = np.asarray(values)
        numeric = np.issubdtype(values.dtype, np.number)
        if numeric:
            colours = values.astype(float)
        else:
            names = sorted(set(values.astype(str)))
            colours = np.array([names.index(v) for v in values.astype(str)], float)
        self.points = self.axes.scatter(xy[:, 0], xy[:, 1], c=colours, cmap="viridis" if numeric
                                        else "tab10", s=28, picker=True, pickradius=6)
        if numeric:
            self.figure.colorbar(self.points, ax=self.axes, label=label)
        else:
            for i, name in enumerate(names):
                self.axes.scatter([], [], color=self.points.cmap(self.points.norm(i)),
                                  label=name, s=20)
            self.axes.legend(title=label, fontsize=7, title_fontsize=7)
        if highlight:
            self.axes.scatter(xy[highlight, 0], xy[highlight, 1], s=120, facecolors="none",
                              edgecolors="red", linewidths=1.5)
        self.axes.set_xlabel(axes[0])
        self.axes.set_ylabel(axes[1])
        self.axes.set_title("click a case to open it", fontsize=8)
        self.canvas.draw_idle()

    def _picked(self, event: Any) -> None:
        if event.artist is self.points and len(event.ind) and self.on_point is not None:
            self.on_point(int(event.ind[0]))
