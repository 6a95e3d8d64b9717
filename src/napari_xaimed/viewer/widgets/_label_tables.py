"""Small table editors for the evaluation's classes (class -> label values) and part-aware
things (thing -> its label values and parts), in place of JSON typed into a line.

Each editor's :attr:`~MappingEditor.value` is the ``classes=`` / ``parts=`` argument of
:func:`~napari_xaimed.evaluation.evaluate` (None when the table is empty); it can also be set
from that dict or its JSON text (scripts, the cohort settings), and :meth:`~MappingEditor.mapping`
reads it back, raising :class:`~napari_xaimed._core.errors.XaimedError` for a cell that does
not parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_xaimed._core.errors import XaimedError


def parse_values(text: str, where: str) -> list[int]:
    """``"1, 2 4"`` -> ``[1, 2, 4]``; ``"3-5"`` -> ``[3, 4, 5]``."""
    values: list[int] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if match is None:
            raise XaimedError(f"{where}: {token!r} is not a label value; write positive "
                              "integers separated by commas, e.g. 1, 2 or 3-5.")
        first, last = int(match[1]), int(match[2] or match[1])
        values.extend(range(first, last + 1))
    if not values or 0 in values:
        raise XaimedError(f"{where}: give one or more positive label values, e.g. 1, 2 "
                          "(0 is the background).")
    return values


def _values_text(values: Any) -> str:
    values = values if isinstance(values, list | tuple) else [values]
    return ", ".join(str(v) for v in values)


def _parts_text(parts: dict[str, Any]) -> str:
    return "; ".join(f"{name}: {_values_text(v)}" for name, v in parts.items())


class MappingEditor(QWidget):
    """A table of rows with Add and Remove buttons (the subclasses say what a row means)."""

    columns: Sequence[str] = ()
    example: str = ""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.prefilled = False  # filled from a layer, not typed: replaced when inputs change
        self._invalid: str | None = None
        self.table = QTableWidget(0, len(self.columns))
        self.table.setHorizontalHeaderLabels(list(self.columns))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(80)
        self.table.setMaximumHeight(140)
        self.table.setToolTip(self.example)
        self.table.cellChanged.connect(self._edited)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        add, remove = QPushButton("Add row"), QPushButton("Remove row")
        add.clicked.connect(lambda: self.table.insertRow(self.table.rowCount()))
        remove.clicked.connect(self._remove_row)
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel(title))
        buttons.addStretch()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        layout.addWidget(self.note)

    def _edited(self, *_: Any) -> None:
        self.prefilled = False
        self._invalid = None
        self.note.setText("")

    def _remove_row(self) -> None:
        row = self.table.currentRow()
        self.table.removeRow(row if row >= 0 else self.table.rowCount() - 1)
        self._edited()

    def rows(self) -> list[list[str]]:
        """The non-empty rows' cell texts."""
        out = []
        for i in range(self.table.rowCount()):
            cells = [self.table.item(i, j) for j in range(self.table.columnCount())]
            texts = [c.text().strip() if c is not None else "" for c in cells]
            if any(texts):
                out.append(texts)
        return out

    def set_rows(self, rows: Sequence[Sequence[str]], prefilled: bool = False) -> None:
        self.table.blockSignals(True)
        self.table.setRowCount(0)
        for row in rows:
            i = self.table.rowCount()
            self.table.insertRow(i)
            for j, text in enumerate(row):
                self.table.setItem(i, j, QTableWidgetItem(str(text)))
        self.table.blockSignals(False)
        self._edited()
        self.prefilled = prefilled and bool(rows)

    @property
    def value(self) -> dict[str, Any] | None:
        return self.mapping()

    @value.setter
    def value(self, value: dict[str, Any] | list | str | None) -> None:
        """Fill from the ``classes=``/``parts=`` dict or its JSON text (empty: no rows); JSON
        that does not parse is kept as the error :meth:`mapping` raises."""
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text else None
            except json.JSONDecodeError as exc:
                self.set_rows([])
                self._invalid = (f"{self.title} is not valid JSON ({exc.msg}); e.g. "
                                 f"{self.example}")
                self.note.setText(self._invalid)
                return
        self.set_rows(self.to_rows(value) if value else [])

    def mapping(self) -> dict[str, Any] | None:
        """The argument the table gives (None when empty).

        Raises
        ------
        XaimedError
            For JSON set that did not parse, a row without a name, or values that are not
            label values.
        """
        if self._invalid is not None:
            raise XaimedError(self._invalid)
        rows = self.rows()
        if not rows:
            return None
        out: dict[str, Any] = {}
        for row in rows:
            if not row[0]:
                raise XaimedError(f"{self.title}: a row has no {self.columns[0]} name; name it "
                                  "or remove the row.")
            out[row[0]] = self.parse_row(row)
        return out

    def to_rows(self, value: Any) -> list[list[str]]:
        raise NotImplementedError

    def parse_row(self, row: list[str]) -> Any:
        raise NotImplementedError


class ClassesEditor(MappingEditor):
    """Class name -> label values: ``{"lesion": [1, 2]}``."""

    columns = ("class", "label values")
    example = '{"lesion": [1, 2]}'

    def to_rows(self, value: Any) -> list[list[str]]:
        if isinstance(value, list | tuple):  # each value its own class
            return [[str(v), str(v)] for v in value]
        if not isinstance(value, dict):
            raise XaimedError(f"classes must map a class name to label values, e.g. "
                              f"{self.example}; got {value!r}.")
        return [[str(name), _values_text(values)] for name, values in value.items()]

    def parse_row(self, row: list[str]) -> list[int]:
        return parse_values(row[1], f"classes, {row[0]!r}")

    def fill_from_names(self, names: dict[int, str]) -> None:
        """One class per named label value (the layer's label names), marked prefilled."""
        self.set_rows([[name, str(value)] for value, name in sorted(names.items())],
                      prefilled=True)


class PartsEditor(MappingEditor):
    """Thing -> its label values and parts:
    ``{"tumour": {"thing": [1, 2], "parts": {"core": [2]}}}``; parts are written
    ``core: 2; edema: 3, 4``."""

    columns = ("thing", "label values", "parts (name: values; ...)")
    example = '{"tumour": {"thing": [1, 2], "parts": {"core": [2]}}}'

    def to_rows(self, value: Any) -> list[list[str]]:
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise XaimedError(f"parts must map a thing to its values and parts, e.g. "
                              f"{self.example}; got {value!r}.")
        return [[str(name), _values_text(spec.get("thing", [])),
                 _parts_text(spec.get("parts", {}))] for name, spec in value.items()]

    def parse_row(self, row: list[str]) -> dict[str, Any]:
        where = f"parts, {row[0]!r}"
        parts: dict[str, list[int]] = {}
        for entry in filter(None, (e.strip() for e in row[2].split(";"))):
            name, sep, values = entry.partition(":")
            if not sep or not name.strip():
                raise XaimedError(f"{where}: write each part as 'name: values', separated "
                                  f"by ';' (e.g. core: 2; edema: 3, 4), not {entry!r}.")
            parts[name.strip()] = parse_values(values, f"{where}, part {name.strip()!r}")
        return {"thing": parse_values(row[1], where), "parts": parts}
