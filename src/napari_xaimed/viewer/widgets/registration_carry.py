"""Carry along: warp further layers from the moving space with the last registration (labels
with label-preserving interpolation, images and heatmaps linearly), in a worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container
from napari.layers import Image, Labels
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.io.grid import Grid
from napari_xaimed.registration.lazy import LazyRegistration
from napari_xaimed.viewer.layers import add_or_update, image_layer, labels_layer, output_name
from napari_xaimed.viewer.widgets._base import check_same_grid, layer_picker
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._scratch import keep_while_shown, scratch_folder


class CarryAlong(QWidget):
    """A layer picker, the interpolation and a Carry along button.

    ``last`` returns the last registration, the moving and fixed layer names and the
    registration's provenance (held by the registration widget)."""

    def __init__(self, viewer: Any,
                 last: Callable[[], tuple[Any, tuple[str, str], dict[str, Any]]]) -> None:
        super().__init__()
        self.viewer, self._last = viewer, last
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Carry a layer from the moving space along:"))
        self.layer = layer_picker(viewer, (Image, Labels), "layer", nullable=True)
        self.interpolation = ComboBox(label="interpolation",
                                      choices=["auto", "linear", "label", "nearest"],
                                      value="auto")
        self.form = Container(widgets=[self.layer, self.interpolation])
        layout.addWidget(self.form.native)
        self.job = JobPanel("Carry along")
        self.job.run_button.setEnabled(False)
        layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.carry)

    def carry(self) -> None:
        """Warp the chosen moving-space layer with the last registration, in a worker."""
        layer = self.layer.value
        result, (moving_name, fixed_name), registration = self._last()
        try:
            if result is None:
                raise XaimedError("Register first: carrying along uses the last registration.")
            if layer is None:
                raise XaimedError("Pick the Image or Labels layer to carry along.")
            moving = f"the moving image {moving_name!r}"
            check_same_grid(Grid(result.moving_shape, result.moving_spacing,
                                 result.moving_origin, name=moving), layer)
        except XaimedError as exc:
            report_error(exc)
            return
        interpolation = self.interpolation.value
        if interpolation == "auto":
            interpolation = "label" if isinstance(layer, Labels) else "linear"
        data, is_labels = layer.data, isinstance(layer, Labels)
        # the carried layer's provenance holds the whole registration, so a rerun can redo both
        carried = PendingInputs(layer=layer)
        folder = (scratch_folder("xaimed-carried-")
                  if isinstance(result, LazyRegistration) else None)

        def steps():
            carried.complete()
            yield Progress(0, 1, f"warping {layer.name} ({interpolation})")
            if folder is not None:  # full resolution, slab by slab, into a Zarr store
                return (yield from result.warp_steps(data, folder / "carried.zarr",
                                                     interpolation=interpolation))
            return result.apply(np.asarray(data), interpolation)

        def done(warped: Any, seconds: float) -> None:
            prov = provenance("registration-apply", sources=[layer.name, moving_name, fixed_name],
                              params={"interpolation": interpolation,
                                      **({} if folder is None else
                                         {"store": str(folder / "carried.zarr")})},
                              seconds=seconds,
                              inputs=carried.records, registration=registration)
            name = output_name(layer.name, moving_name, fixed_name)
            kwargs = {"translate": result.fixed_origin, "provenance": prov}
            if is_labels:
                shown = add_or_update(self.viewer, labels_layer(
                    warped, name, result.fixed_spacing, **kwargs))
            else:
                shown = add_or_update(self.viewer, image_layer(
                    warped, name, result.fixed_spacing, colormap=layer.colormap.name,
                    **kwargs))
            keep_while_shown(self.viewer, shown, folder)

        self.job.start(steps(), done, f"Carrying {layer.name} along", scratch=folder)
