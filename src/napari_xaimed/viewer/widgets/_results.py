"""Result views shared by widgets: a table with copy and CSV export, and a curve plot.

Both keep a usable minimum height (:data:`MIN_VIEW_HEIGHT`) whatever the dock's height: the
dock scrolls instead (see ``_base``); squeezed by other docks they had shrunk to 1.5 table rows
and a 25 px plot.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

#: Smallest height (px) of a result table's rows area and of a plot's canvas.
MIN_VIEW_HEIGHT = 180


def wrapping(label: QLabel) -> QLabel:
    """``label`` wrapped at the dock's width: word wrap on, and no say in the dock's width (a
    wrapped QLabel still asks for a width that fits much of its text on one line, and a long
    status line made the dock's content wider than the dock), but never shorter than its
    wrapped lines (with the default vertical policy the layout cut them off)."""
    label.setWordWrap(True)
    label.setMinimumWidth(0)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    return label


def _text(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (tuple, list)):
        return ", ".join(_text(v) for v in value)
    return str(value)


class ResultTable(QWidget):
    """Rows of dicts as a table; Copy puts tab-separated text on the clipboard, CSV saves it."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self.table = QTableWidget()
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(MIN_VIEW_HEIGHT)
        copy, export = QPushButton("Copy"), QPushButton("Save CSV…")
        copy.clicked.connect(self.copy)
        export.clicked.connect(self._ask_csv)
        buttons = QHBoxLayout()
        buttons.addWidget(copy)
        buttons.addWidget(export)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(buttons)

    def set_rows(self, rows: Sequence[dict[str, Any]],
                 columns: Sequence[str] | None = None) -> None:
        self.rows = list(rows)
        self.columns = list(columns or (self.rows[0].keys() if self.rows else []))
        self.table.clear()
        self.table.setColumnCount(len(self.columns))
        self.table.setRowCount(len(self.rows))
        self.table.setHorizontalHeaderLabels(self.columns)
        for i, row in enumerate(self.rows):
            for j, column in enumerate(self.columns):
                self.table.setItem(i, j, QTableWidgetItem(_text(row.get(column, ""))))
        self.table.resizeColumnsToContents()

    def tsv(self) -> str:
        lines = ["\t".join(self.columns)]
        lines += ["\t".join(_text(r.get(c, "")) for c in self.columns) for r in self.rows]
        return "\n".join(lines)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.tsv())

    def export_csv(self, path: str) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow([row.get(c, "") for c in self.columns])

    def _ask_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Save {self.title}", f"{self.title}.csv",
                                              "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def on_select(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(row)`` when the user selects a row."""
        def selected() -> None:
            index = self.table.currentRow()
            if 0 <= index < len(self.rows):
                callback(self.rows[index])
        self.table.itemSelectionChanged.connect(selected)


class CurvePlot(QWidget):
    """A small matplotlib plot of curves against one x axis."""

    def __init__(self, xlabel: str, ylabel: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(MIN_VIEW_HEIGHT)
        self.axes = self.figure.add_subplot()
        self.xlabel, self.ylabel = xlabel, ylabel
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

    def plot(self, x: Sequence[float], curves: dict[str, Sequence[float]], title: str = "",
             xlabel: str | None = None, ylabel: str | None = None,
             ylim: tuple[float, float] = (0, 1.02)) -> None:
        """Draw ``curves`` (label -> y values) over ``x``; axis labels default to the ones
        given at construction."""
        self.axes.clear()
        for label, y in curves.items():
            self.axes.plot(x, y, marker="o", markersize=3, label=label)
        self.axes.set_xlabel(self.xlabel if xlabel is None else xlabel)
        self.axes.set_ylabel(self.ylabel if ylabel is None else ylabel)
        self.axes.set_ylim(*ylim)
        self.axes.set_title(title, fontsize=9)
        if curves:
            self.axes.legend(fontsize=7)
        self.canvas.draw_idle()
