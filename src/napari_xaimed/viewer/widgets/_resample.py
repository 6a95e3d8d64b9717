"""The "resample onto the reference grid" that grid-mismatch errors advise, offered as an action.

When a dock's grid check refuses two layers (:func:`~napari_xaimed.viewer.widgets._base.
check_same_grid` raises a :class:`GridMismatch`), the error is shown as usual and every
napari-xaimed dock that has both layers picked shows a :class:`ResampleOffer` under its form:
one click resamples the second layer onto the first one's grid
(:func:`napari_xaimed.registration.regrid.resample_onto`: nearest neighbour for a Labels layer,
linear for an Image), adds the result as a new layer with its provenance, and picks it in the
dock's form instead of the layer it replaces. Input layers are not changed.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.viewer.layers import (
    add_or_update,
    image_layer,
    labels_layer,
    output_name,
    source_geometry,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._mismatch import GridMismatch, offers
from napari_xaimed.viewer.widgets._results import wrapping


def interpolation_for(layer: Any) -> str:
    """Nearest neighbour for label maps (values kept), linear for images."""
    return "nearest" if layer._type_string == "labels" else "linear"


def resampled_layer(layer: Any, reference: Any, data: Any, seconds: float | None = None,
                    inputs: dict[str, Any] | None = None) -> tuple:
    """The LayerDataTuple of ``layer`` resampled onto ``reference``'s grid: the reference's
    scale and translate (and file orientation), the source's look, its provenance."""
    spacing, translate = source_geometry(reference)
    interpolation = interpolation_for(layer)
    prov = provenance("resample onto grid", sources=[layer.name, reference.name],
                      seconds=seconds, inputs=inputs,
                      params={"interpolation": interpolation, "fill": 0,
                              "reference_grid": {"shape": list(reference.data.shape[-3:]),
                                                 "spacing": list(spacing),
                                                 "translate": list(translate)}})
    nifti = (reference.metadata or {}).get("nifti")
    metadata = {"nifti": {"affine": nifti["affine"]}} if nifti and "affine" in nifti else None
    name = output_name(f"Resampled onto {reference.name}", layer.name)
    if interpolation == "nearest":
        return labels_layer(data, name, spacing, translate=translate, provenance=prov,
                            metadata=metadata)
    return image_layer(data, name, spacing, translate=translate, provenance=prov,
                       metadata=metadata, colormap=layer.colormap.name,
                       contrast_limits=list(layer.contrast_limits))


class ResampleOffer(QWidget):
    """A note and a button under a dock's form, shown while a grid mismatch is on offer."""

    def __init__(self, dock: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dock = dock
        self.note = wrapping(QLabel(""))
        self.job = JobPanel("Resample")
        self.job.run_button.clicked.connect(self.run)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.job)
        self.mismatch: GridMismatch | None = None
        self._replacing = False
        self.setVisible(False)
        offers().offered.connect(self.offer)
        dock.form.changed.connect(self._follow)

    def _picked(self) -> list[Any]:
        """The dock's layer pickers the form shows (a check hides the fields it does not
        read) that have a layer picked."""
        return [w for w in self.dock.form if hasattr(w, "choices") and not w.native.isHidden()
                and getattr(w, "value", None) is not None]

    def _has_pair(self, mismatch: GridMismatch) -> bool:
        values = [w.value for w in self._picked()]
        return (any(v is mismatch.layer for v in values)
                and any(v is mismatch.reference for v in values))

    def _follow(self, *_: Any) -> None:
        """A stale offer goes when the form's inputs change (and no longer hold the pair)."""
        if self._replacing or self.isHidden():
            return
        if self.mismatch is None or not self._has_pair(self.mismatch):
            self.setVisible(False)

    def offer(self, mismatch: GridMismatch) -> None:
        """Show the action when this dock has both layers of ``mismatch`` picked."""
        if not self._has_pair(mismatch):
            return
        self.mismatch = mismatch
        layer, reference = mismatch.layer, mismatch.reference
        how = "nearest neighbour" if interpolation_for(layer) == "nearest" else "linear"
        self.note.setText(f"{layer.name!r} does not lie on the grid of {reference.name!r}: "
                          f"resample it ({how}) onto that grid as a new layer?")
        self.job.run_button.setText(f"Resample {layer.name!r} onto {reference.name!r}")
        self.job.status.setText("")
        self.setVisible(True)

    def run(self) -> None:
        """Resample the offered layer in a worker; add it and pick it instead."""
        from napari_xaimed.registration.regrid import resample_onto

        if self.mismatch is None:
            return
        layer, reference = self.mismatch.layer, self.mismatch.reference
        viewer = self.dock.viewer
        if layer not in viewer.layers or reference not in viewer.layers:
            report_error(XaimedError("A layer of the offer was removed: pick the layers again "
                                     "and run the check."))
            self.setVisible(False)
            return
        data, interpolation = layer.data, interpolation_for(layer)
        inputs = PendingInputs(layer=layer, reference=reference)

        def steps():
            yield Progress(0, 1, f"resampling {layer.name!r}")
            return resample_onto(data, layer, reference, interpolation=interpolation), \
                inputs.complete()

        def done(result: tuple, seconds: float) -> None:
            resampled, records = result
            new = add_or_update(viewer, resampled_layer(layer, reference, resampled,
                                                        seconds, records))
            self._replacing = True
            try:
                for widget in self._picked():
                    if widget.value is layer:
                        widget.value = new
            finally:
                self._replacing = False
            self.note.setText(f"{new.name!r} is picked instead of {layer.name!r}: run again.")
            self.mismatch = None

        self.job.start(steps(), done, f"Resampling {layer.name} onto {reference.name}")
