"""Registration dock widget: align a moving Image to a fixed one with ANTs and see the field.

ANTs runs in a separate process (``registration.spawned``), so the viewer stays responsive and
Cancel kills it. The outputs land on the fixed grid as ``"<what> [moving->fixed]"`` layers:
the warped image, the displacement as vectors, the Jacobian determinant centred on 1, the
folded voxels and a warped grid; the quality table shows the figures before and after. The
last result stays in the widget, so "Carry along" can warp further layers from the moving
space (labels with label-preserving interpolation, images and heatmaps linearly).

A lazy (dask-backed, larger than memory) fixed or moving layer takes
:func:`~napari_xaimed.registration.lazy.register_lazy` in the worker: ANTs registers block-mean
copies of at most :data:`LAZY_MAX_VOXELS` voxels, the warped image is computed at full
resolution slab by slab into a Zarr store in a temporary folder and shown as a dask layer over
it, and the field's layers (vectors, Jacobian, folded, grid) lie on the coarse grid, with its
scale and translate, so they overlay in world coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox
from napari.layers import Image, Labels, Points

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import PendingInputs
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.registration import TRANSFORMS, RegistrationResult, prewarm, register_steps
from napari_xaimed.registration.lazy import LazyRegistration
from napari_xaimed.registration.params import LINEAR, METRICS, QUICK_SYN
from napari_xaimed.viewer.heatmaps import decorate, is_heatmap, watch
from napari_xaimed.viewer.layers import add_or_update, source_geometry
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import ResultTable
from napari_xaimed.viewer.widgets._scratch import keep_while_shown, scratch_folder
from napari_xaimed.viewer.widgets.registration_carry import CarryAlong
from napari_xaimed.viewer.widgets.registration_form import parse_iterations, world_points
from napari_xaimed.viewer.widgets.registration_results import (
    error_layer,
    quality_rows,
    registration_layers,
    registration_provenance,
)
from napari_xaimed.viewer.widgets.registration_view import (
    RegistrationView,
    fit_rows,
    known_displacement,
    truth_error,
    truth_source,
)

__all__ = ["DEFAULT", "LAZY_MAX_VOXELS", "RegistrationWidget", "parse_iterations",
           "quality_rows", "world_points"]

DEFAULT = "(ANTs default)"
#: Voxels of each downsampled copy ANTs registers for a lazy layer (128^3: SyN in about a
#: minute on 2 cores).
LAZY_MAX_VOXELS = 2**21


class RegistrationWidget(XaimedWidget):
    """Fixed/moving pickers, the transform and its few parameters; layers and a quality table."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.fixed = layer_picker(napari_viewer, Image, "fixed")
        self.moving = layer_picker(napari_viewer, Image, "moving")
        self.transform = ComboBox(label="transform", choices=list(TRANSFORMS), value="SyN")
        self.iterations = LineEdit(label="iterations", value="",
                                   tooltip="Per level, coarse to fine, e.g. 40, 20, 0; empty: "
                                           "ANTs' default")
        self.metric = ComboBox(label="metric", choices=[DEFAULT, *METRICS], value=DEFAULT)
        self.gradient_step = FloatSpinBox(label="gradient step", value=0.2, min=0.01, max=5.0,
                                          step=0.05)
        self.reproducible = CheckBox(label="reproducible (1 thread)", value=True)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 2)
        self.fixed_mask = layer_picker(napari_viewer, Labels, "fixed mask", nullable=True)
        self.moving_mask = layer_picker(napari_viewer, Labels, "moving mask", nullable=True)
        self.fixed_labels = layer_picker(napari_viewer, Labels, "fixed labels (Dice)",
                                         nullable=True)
        self.moving_labels = layer_picker(napari_viewer, Labels, "moving labels (Dice)",
                                          nullable=True)
        self.fixed_points = layer_picker(napari_viewer, Points, "fixed landmarks", nullable=True)
        self.moving_points = layer_picker(napari_viewer, Points, "moving landmarks", nullable=True)
        self.vector_step = SpinBox(label="vector every (voxels)", value=8, min=1, max=64)
        self.grid_mm = FloatSpinBox(label="grid spacing (mm)", value=5.0, min=0.5, max=100.0)
        self.form.extend([self.fixed, self.moving, self.transform, self.iterations, self.metric,
                          self.gradient_step, self.reproducible, self.seed, self.fixed_mask,
                          self.moving_mask, self.fixed_labels, self.moving_labels,
                          self.fixed_points, self.moving_points, self.vector_step,
                          self.grid_mm])
        for picker in (self.fixed, self.moving):
            picker.changed.connect(self.update_info)
            picker.changed.connect(self._clear_status)
        self.transform.changed.connect(self._show_fields)
        self.reproducible.changed.connect(self._show_fields)
        self.job = JobPanel("Register")
        self._layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.run)
        self.view = RegistrationView(napari_viewer)
        self._layout.addWidget(self.view.native)
        self.quality = ResultTable("registration quality")
        self._layout.addWidget(self.quality)
        self.carrying = CarryAlong(napari_viewer, lambda: (self.result, self._sources,
                                                           self._provenance))
        self._layout.addWidget(self.carrying)
        # the names tests and scripts know
        self.carry_layer, self.carry_interpolation = self.carrying.layer, \
            self.carrying.interpolation
        self.carry_job, self.carry = self.carrying.job, self.carrying.carry
        self.result: RegistrationResult | None = None
        self._sources: tuple[str, str] = ("", "")
        self._provenance: dict[str, Any] = {}
        self._show_fields()
        watch(napari_viewer)  # every heatmap here gets its colour bar and title
        self.reset_choices()
        images = [layer for layer in napari_viewer.layers if isinstance(layer, Image)]
        if len(images) >= 2:
            self.moving.value = images[1]
        self.job.finished.connect(self._prewarm)
        self._prewarm()

    def _prewarm(self, *_: Any) -> None:
        """Have a process with ANTs imported wait for the next Register (saves ~2-3 s)."""
        prewarm(int(self.seed.value) if self.reproducible.value else None)

    def reset_choices(self, *_: Any) -> None:
        super().reset_choices()
        if hasattr(self, "carrying"):
            self.carrying.form.reset_choices()

    def _show_fields(self, *_: Any) -> None:
        preset = self.transform.value == QUICK_SYN
        deformable = self.transform.value not in LINEAR
        for widget in (self.iterations, self.metric):
            widget.visible = not preset
        self.gradient_step.visible = deformable and not preset
        self.seed.visible = self.reproducible.value

    def _clear_status(self, *_: Any) -> None:
        """Other images: the last run's table and status line no longer describe them (its
        result stays for Carry along, which names the images it registered)."""
        if hasattr(self, "quality") and not self.job.running:
            self.quality.set_rows([])
            self.job.status.setText("")

    def update_info(self, *_: Any) -> None:
        text = (f"fixed: {describe_layer(self.fixed.value)}\n"
                f"moving: {describe_layer(self.moving.value)}")
        if any(layer is not None and is_lazy(layer.data)
               for layer in (self.fixed.value, self.moving.value)):
            text += (f"\nlazy layer: ANTs registers block-mean copies of at most "
                     f"{LAZY_MAX_VOXELS} voxels; the warped image is computed at full "
                     "resolution, the field's layers and quality figures on the coarse grid")
        self.info.value = text

    def params(self) -> dict[str, Any]:
        """Tuning parameters for :func:`~napari_xaimed.registration.register` from the form."""
        params: dict[str, Any] = {}
        if self.transform.value == QUICK_SYN:
            return params
        iterations = parse_iterations(self.iterations.value)
        if iterations is not None:
            params["iterations"] = iterations
        if self.metric.value != DEFAULT:
            params["metric"] = self.metric.value
        if self.transform.value not in LINEAR and \
                abs(self.gradient_step.value - 0.2) > 1e-9:
            params["gradient_step"] = self.gradient_step.value
        return params

    def _inputs(self) -> dict[str, Any]:
        """Masks, labels (their layers' data, not read yet: a lazy one is read in the worker)
        and landmarks (world mm)."""
        def data(picker: ComboBox) -> Any:
            return None if picker.value is None else picker.value.data

        def points(picker: ComboBox) -> Any:
            return None if picker.value is None else world_points(picker.value)

        return {
            "fixed_mask": data(self.fixed_mask), "moving_mask": data(self.moving_mask),
            "fixed_labels": data(self.fixed_labels), "moving_labels": data(self.moving_labels),
            "fixed_points": points(self.fixed_points),
            "moving_points": points(self.moving_points),
        }

    def run(self) -> None:
        """Register in a worker (ANTs in its own process); add or update the output layers."""
        fixed, moving = self.fixed.value, self.moving.value
        try:
            if fixed is None or moving is None:
                raise XaimedError("Pick a fixed and a moving Image layer.")
            if fixed is moving:
                raise XaimedError("Fixed and moving are the same layer: pick two different "
                                  "images.")
            params = self.params()
            inputs = self._inputs()
            for image, picker in ((fixed, self.fixed_mask), (fixed, self.fixed_labels),
                                  (moving, self.moving_mask), (moving, self.moving_labels)):
                check_same_grid(image, picker.value)
        except XaimedError as exc:
            report_error(exc)
            return
        f_sp, f_tr = source_geometry(fixed)
        m_sp, m_tr = source_geometry(moving)
        seed = int(self.seed.value) if self.reproducible.value else None
        transform = self.transform.value
        lazy = is_lazy(fixed.data) or is_lazy(moving.data)
        geometry = {"fixed_spacing": f_sp, "moving_spacing": m_sp, "fixed_origin": f_tr,
                    "moving_origin": m_tr, "transform": transform, "seed": seed}
        vector_step, grid_mm = int(self.vector_step.value), float(self.grid_mm.value)
        names = (moving.name, fixed.name)
        # every input that shapes the result (masks) or its figures (labels, landmarks), with
        # where it came from and its SHA-256 (not for a lazy layer), so the provenance reruns it
        recorded = PendingInputs(
            fixed=fixed, moving=moving, fixed_mask=self.fixed_mask.value,
            moving_mask=self.moving_mask.value, fixed_labels=self.fixed_labels.value,
            moving_labels=self.moving_labels.value, fixed_points=self.fixed_points.value,
            moving_points=self.moving_points.value)
        fixed_data, moving_data = fixed.data, moving.data
        folder = scratch_folder("xaimed-registration-") if lazy else None
        truth = truth_source(fixed, moving)  # the sample's known field, when it is the sample

        # a lazy layer: register_steps reads downsampled copies slab by slab (in the worker)
        # and warps the moving image into a store in the scratch folder
        where = {"max_voxels": LAZY_MAX_VOXELS, "out": folder / "warped.zarr"} if lazy else {}

        def steps():
            recorded.complete()  # hashing CT-sized layers: in the worker, not the GUI thread
            inputs_now = inputs if lazy else {
                k: v if k.endswith("points") or v is None else np.asarray(v)
                for k, v in inputs.items()}
            result = yield from register_steps(fixed_data, moving_data, **geometry,
                                               **inputs_now, **params, **where)
            known = None if truth is None or lazy else known_displacement(truth)
            return result, None if known is None else truth_error(result.displacement, *known)

        def done(out: tuple[RegistrationResult | LazyRegistration, Any], seconds: float) -> None:
            result, error = out
            self._show_result(result, names, f_sp, f_tr, vector_step, grid_mm, seconds,
                              recorded.records, scratch=folder, fixed=fixed, error=error)

        how = (f", downsampled to at most {LAZY_MAX_VOXELS} voxels, warped slab by slab"
               if lazy else "")
        self.job.start(steps(), done,
                       f"Registering {moving.name} to {fixed.name} ({transform}{how})",
                       scratch=folder)

    def _show_result(self, result: RegistrationResult | LazyRegistration,
                     names: tuple[str, str], spacing: tuple[float, float, float],
                     translate: tuple[float, float, float], vector_step: int, grid_mm: float,
                     seconds: float, inputs: dict[str, Any] | None = None,
                     scratch: Path | None = None, fixed: Any = None,
                     error: tuple[Any, list[dict[str, Any]]] | None = None) -> None:
        """Add the outputs (fixed and warped shown, the rest hidden) and fill the table; on
        the sample, the error against its known field as a hidden heatmap and two rows."""
        lazy = result if isinstance(result, LazyRegistration) else None
        prov = registration_provenance(result, names, vector_step, grid_mm, seconds, inputs)
        layers = registration_layers(result, names, spacing, translate, vector_step, grid_mm,
                                     prov)
        if error is not None:
            layers.append(error_layer(error[0], names, spacing, translate, prov))
        shown = [add_or_update(self.viewer, layer) for layer in layers]
        for layer in shown:
            if is_heatmap(layer):
                decorate(self.viewer, layer)
        keep_while_shown(self.viewer, shown[0], scratch)  # the lazy warped image's store
        if fixed is not None:
            self.view.show(fixed, shown[0], names)
        if lazy is not None:
            from napari.utils.notifications import show_info

            show_info(f"{names[0]} -> {names[1]}: registered on copies downsampled by "
                      f"{lazy.moving_factors} and {lazy.fixed_factors}; the warped image is at "
                      f"full resolution ({lazy.path}), the field's layers on the coarse grid.")
        self.result = result
        self._sources, self._provenance = names, prov
        rows = quality_rows((result if lazy is None else lazy.coarse).metrics)
        self.quality.set_rows(rows + ([] if error is None else error[1]))
        fit_rows(self.quality.table)
        self.carry_job.run_button.setEnabled(True)
