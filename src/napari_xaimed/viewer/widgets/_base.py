"""What every dock widget shares: the viewer, a form of inputs that follows the layer list, and
a dock that fits on a screen.

Fitting (issue 29 item 6): each dock's content sits in a :class:`~qtpy.QtWidgets.QScrollArea`,
so the dock can be shorter than its form (it scrolls) instead of growing the main window (with
the seven docks stacked it grew to 4,753 px); the info line wraps instead of widening the dock;
tables and plots keep a usable minimum height (``_results``). The napari-xaimed docks share one
place: a dock added to a dock area that already holds a napari-xaimed dock becomes a tab beside
it (:meth:`XaimedWidget.join_tabs`), so each has the area's full height; a user can still drag
a tab out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io import grid
from napari_xaimed.viewer.widgets._mismatch import GridMismatch
from napari_xaimed.viewer.widgets._resample import ResampleOffer
from napari_xaimed.viewer.widgets._results import wrapping


def layer_picker(viewer: Any, layer_type: type | tuple[type, ...], label: str,
                 nullable: bool = False) -> ComboBox:
    """A drop-down of the viewer's layers of the given type(s), refreshed by
    :meth:`XaimedWidget.reset_choices`; ``nullable`` lets it be left empty (optional inputs)."""

    def choices(_widget: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, layer_type)]

    if nullable:
        return ComboBox(label=label, choices=choices, nullable=True, value=None)
    return ComboBox(label=label, choices=choices, nullable=False)


def describe_layer(layer: Any) -> str:
    """``"64×64×64 voxels at 1.00×1.00×1.50 mm"`` for a layer, from its data shape and scale."""
    if layer is None:
        return "no layer"
    shape = "×".join(str(n) for n in layer.data.shape)
    scale = "×".join(f"{s:.2f}" for s in layer.scale)
    return f"{shape} voxels at {scale} mm"


def check_same_grid(first: Any, second: Any) -> None:
    """Raise a :class:`XaimedError` when two layers of the same shape lie on different grids.

    Arrays of one shape would be compared voxel by voxel, but with another ``scale``,
    ``translate`` or file orientation the voxels do not overlay, so the result would be silently
    wrong. The package's one grid check (:func:`napari_xaimed.io.grid.check_same_grid`), with its
    tolerances relative to the voxel size. Two 3D napari layers of different shapes are refused
    too (every dock pairs them voxel by voxel); other pairs of different shapes (a 4D layer, a
    :class:`~napari_xaimed.io.grid.Grid`) are left to the core functions, which name that
    problem.

    Raises
    ------
    GridMismatch
        For two 3D napari layers: the error names them, and the docks that have both picked
        offer to resample ``second`` onto ``first``'s grid (``_resample``).
    XaimedError
        For other pairs of the same shape on different grids.
    """
    if first is None or second is None:
        return
    layers = all(hasattr(x, "_type_string") and np.ndim(x.data) == 3 for x in (first, second))
    if not layers and grid.grid_of(first).shape != grid.grid_of(second).shape:
        return
    message = grid.grid_difference(first, second)
    if message is None:
        return
    if layers:
        raise GridMismatch(message, layer=second, reference=first)
    raise XaimedError(message)


class XaimedWidget(QWidget):
    """Base of the dock widgets: holds the viewer and a magicgui form whose layer lists stay
    current.

    Subclasses add their views to ``self._layout``, the layout of ``self.content``, which
    scrolls inside the widget (see the module docstring).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.form = Container(labels=True)
        self.info = Label(value="")
        wrapping(self.info.native)
        self.content = QWidget()
        self._layout = QVBoxLayout(self.content)
        self._layout.addWidget(self.form.native)
        self._layout.addWidget(self.info.native)
        self.resample_offer = ResampleOffer(self)  # shown when a grid check refuses a pair
        self._layout.addWidget(self.resample_offer)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setWidget(self.content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        self._dock: QDockWidget | None = None
        self._models: dict[tuple[str, float], Any] = {}
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(self.reset_choices)

    def chosen_model(self, bundled: str, bundled_name: str = "the bundled model") -> str:
        """The model the form names: ``bundled`` when its ``model_source`` drop-down says so,
        the path in its ``model_folder`` field when it says ``"folder"`` (an nnU-Net result
        or a MONAI bundle), else the path in its ``model_file`` field.

        Raises
        ------
        XaimedError
            When the field is empty or names nothing that exists.
        """
        if self.model_source.value == bundled:
            return bundled
        folder = self.model_source.value == "folder"
        path = (self.model_folder if folder else self.model_file).value
        # an empty file field reads as Path("."), the working folder, which exists
        if path is None or str(path) in ("", ".") or not Path(path).exists():
            raise XaimedError(f"Choose the model {'folder' if folder else 'file'} (or "
                              f"{bundled_name}).")
        return str(path)

    def _model(self, source: str, trust: bool = False) -> Any:
        """The loaded model of ``source`` (a :meth:`chosen_model`), kept while its file is
        unchanged (one at a time: its shape checks are kept with it). Called in the worker."""
        from napari_xaimed.models.loading import BUNDLED, BUNDLED_SEGMENTER, load_model

        bundled = source in (BUNDLED, BUNDLED_SEGMENTER)
        key = (str(source), 0.0 if bundled else Path(source).stat().st_mtime)
        if key not in self._models:
            self._models = {key: load_model(source, trust=trust)}
        return self._models[key]

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            self._watch_dock()
        return super().event(event)

    def _watch_dock(self) -> None:
        """Once in a dock, join the other napari-xaimed docks when it is added to an area."""
        dock = self.parent()
        if not isinstance(dock, QDockWidget) or dock is self._dock:
            return
        self._dock = dock
        dock.dockLocationChanged.connect(self.join_tabs)

    def join_tabs(self, area: Any = None) -> None:
        """Make this widget's dock a tab beside the napari-xaimed docks already in its area.

        Called once, when the dock is first added to a main window (napari's ``Plugins``
        menu and ``add_dock_widget`` stack docks one under the other, which left each a
        sliver of the screen); a dock the user moves later stays where it is put.
        """
        dock = self._dock
        if dock is None:
            return
        dock.dockLocationChanged.disconnect(self.join_tabs)
        window = dock.parent()
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        others = [d for d in window.findChildren(QDockWidget)
                  if d is not dock and not d.isFloating()
                  and window.dockWidgetArea(d) == area and isinstance(d.widget(), XaimedWidget)]
        if others:
            window.tabifyDockWidget(others[-1], dock)
            dock.show()
            dock.raise_()

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer drop-downs (napari also calls this when layers change)."""
        self.form.reset_choices()
        self.update_info()

    def update_info(self) -> None:
        """Refresh the info line under the form; subclasses say what their inputs look like."""


def region_names(layer: Any) -> dict[int, str] | None:
    """Region names from a Labels layer's features (columns ``index`` or ``label``, and
    ``name``), as atlas readers set them; None when it has none."""
    features = getattr(layer, "features", None)
    if features is None or "name" not in getattr(features, "columns", ()):
        return None
    key = next((c for c in ("label", "index") if c in features.columns), None)
    ids = features[key] if key else features.index
    return {int(i): str(n) for i, n in zip(ids, features["name"], strict=True)}
