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
from qtpy.QtWidgets import QLabel

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.io.grid import Grid
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.registration import TRANSFORMS, RegistrationResult, prewarm, register_steps
from napari_xaimed.registration.lazy import LazyRegistration
from napari_xaimed.registration.params import LINEAR, METRICS, QUICK_SYN
from napari_xaimed.viewer.layers import (
    add_or_update,
    heatmap_layer,
    image_layer,
    labels_layer,
    output_name,
    source_geometry,
    vectors_layer,
)
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import ResultTable
from napari_xaimed.viewer.widgets._scratch import keep_while_shown, scratch_folder

DEFAULT = "(ANTs default)"
#: Voxels of each downsampled copy ANTs registers for a lazy layer (128^3: SyN in about a
#: minute on 2 cores).
LAZY_MAX_VOXELS = 2**21


def parse_iterations(text: str) -> tuple[int, ...] | None:
    """``"40, 20, 0"`` -> ``(40, 20, 0)``; empty -> None (ANTs' default)."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise XaimedError(f"iterations must be whole numbers per level, coarse to fine, e.g. "
                          f"'40, 20, 0'; got {text!r}.") from exc


def world_points(layer: Any) -> np.ndarray:
    """A Points layer's points in world mm (z, y, x)."""
    data = np.asarray(layer.data, dtype=np.float64)[:, -3:]
    return data * np.asarray(layer.scale[-3:]) + np.asarray(layer.translate[-3:])


def quality_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The quality figures as a before/after table."""
    rows = []
    for name, key in (("NCC", "ncc"), ("mutual information", "mi"),
                      ("TRE mean (mm)", "tre_{}_mean_mm"), ("TRE max (mm)", "tre_{}_max_mm")):
        before = metrics.get(f"{key}_before" if "{}" not in key else key.format("before"))
        after = metrics.get(f"{key}_after" if "{}" not in key else key.format("after"))
        if before is not None:
            rows.append({"figure": name, "before": before, "after": after})
    for label, before in metrics.get("dice_before", {}).items():
        rows.append({"figure": f"Dice label {label}", "before": before,
                     "after": metrics["dice_after"][label]})
    for name, key in (("folded voxels (%)", "folded_percent"), ("Jacobian min", "jacobian_min"),
                      ("Jacobian max", "jacobian_max"), ("Jacobian std", "jacobian_std")):
        rows.append({"figure": name, "before": "", "after": metrics[key]})
    return rows


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
        self.fixed.changed.connect(self.update_info)
        self.moving.changed.connect(self.update_info)
        self.transform.changed.connect(self._show_fields)
        self.reproducible.changed.connect(self._show_fields)
        self.job = JobPanel("Register")
        self._layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.run)
        self.quality = ResultTable("registration quality")
        self._layout.addWidget(self.quality)
        self._layout.addWidget(QLabel("Carry a layer from the moving space along:"))
        self.carry_layer = layer_picker(napari_viewer, (Image, Labels), "layer", nullable=True)
        self.carry_interpolation = ComboBox(label="interpolation",
                                            choices=["auto", "linear", "label", "nearest"],
                                            value="auto")
        from magicgui.widgets import Container

        self.carry_form = Container(widgets=[self.carry_layer, self.carry_interpolation])
        self._layout.addWidget(self.carry_form.native)
        self.carry_job = JobPanel("Carry along")
        self.carry_job.run_button.setEnabled(False)
        self._layout.addWidget(self.carry_job)
        self.carry_job.run_button.clicked.connect(self.carry)
        self.result: RegistrationResult | None = None
        self._sources: tuple[str, str] = ("", "")
        self._provenance: dict[str, Any] = {}
        self._show_fields()
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
        if hasattr(self, "carry_form"):
            self.carry_form.reset_choices()

    def _show_fields(self, *_: Any) -> None:
        preset = self.transform.value == QUICK_SYN
        deformable = self.transform.value not in LINEAR
        for widget in (self.iterations, self.metric):
            widget.visible = not preset
        self.gradient_step.visible = deformable and not preset
        self.seed.visible = self.reproducible.value

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

        # a lazy layer: register_steps reads downsampled copies slab by slab (in the worker)
        # and warps the moving image into a store in the scratch folder
        where = {"max_voxels": LAZY_MAX_VOXELS, "out": folder / "warped.zarr"} if lazy else {}

        def steps():
            recorded.complete()  # hashing CT-sized layers: in the worker, not the GUI thread
            return (yield from register_steps(fixed_data, moving_data, **geometry, **inputs,
                                              **params, **where))

        def done(result: RegistrationResult | LazyRegistration, seconds: float) -> None:
            self._show_result(result, names, f_sp, f_tr, vector_step, grid_mm, seconds,
                              recorded.records, scratch=folder)

        how = (f", downsampled to at most {LAZY_MAX_VOXELS} voxels, warped slab by slab"
               if lazy else "")
        self.job.start(steps(), done,
                       f"Registering {moving.name} to {fixed.name} ({transform}{how})",
                       scratch=folder)

    def _show_result(self, result: RegistrationResult | LazyRegistration,
                     names: tuple[str, str], spacing: tuple[float, float, float],
                     translate: tuple[float, float, float], vector_step: int, grid_mm: float,
                     seconds: float, inputs: dict[str, Any] | None = None,
                     scratch: Path | None = None) -> None:
        lazy = result if isinstance(result, LazyRegistration) else None
        coarse = result if lazy is None else lazy.coarse
        extra = {} if lazy is None else {
            "lazy": {k: v for k, v in lazy.to_dict().items()
                     if k.startswith(("coarse_", "fixed_", "moving_", "warped_"))},
            "timings_lazy": lazy.timings}
        prov = provenance("registration", sources=list(names),
                          params={**coarse.params, "vector_step": vector_step,
                                  "grid_mm": grid_mm},
                          seconds=seconds, metrics=coarse.metrics, timings=coarse.timings,
                          inputs=inputs, **extra)
        warped_at = (spacing, translate)
        if lazy is not None:  # the field's layers on the coarse grid they were computed on
            spacing, translate = lazy.coarse_spacing, lazy.coarse_origin
        result = coarse

        def geometry(output: str, at: tuple | None = None) -> dict[str, Any]:
            # which output: a rerun recomputes it
            return {"translate": translate if at is None else at[1],
                    "provenance": {**prov, "output": output}}

        vectors, lengths = result.vectors(step=vector_step)
        layers = [
            image_layer(result.warped if lazy is None else lazy.warped,
                        output_name("Warped", *names), warped_at[0],
                        **geometry("warped", warped_at)),
            heatmap_layer(result.jacobian, output_name("Jacobian", *names), spacing,
                          signed=True, centre=1.0, **geometry("jacobian")),
            labels_layer(result.folded, output_name("Folded", *names), spacing,
                         **geometry("folded")),
            image_layer(result.grid(grid_mm), output_name("Warped grid", *names), spacing,
                        colormap="cyan", blending="additive", contrast_limits=(0, 1),
                        opacity=0.5, **geometry("grid")),
            vectors_layer(vectors, lengths, output_name("Displacement", *names), spacing,
                          **geometry("displacement vectors")),
        ]
        shown = [add_or_update(self.viewer, layer) for layer in layers]
        keep_while_shown(self.viewer, shown[0], scratch)  # the lazy warped image's store
        if lazy is not None:
            from napari.utils.notifications import show_info

            show_info(f"{names[0]} -> {names[1]}: registered on copies downsampled by "
                      f"{lazy.moving_factors} and {lazy.fixed_factors}; the warped image is at "
                      f"full resolution ({lazy.path}), the field's layers on the coarse grid.")
        self.result = result if lazy is None else lazy
        self._sources, self._provenance = names, prov
        self.quality.set_rows(quality_rows(result.metrics))
        self.carry_job.run_button.setEnabled(True)

    def carry(self) -> None:
        """Warp the chosen moving-space layer with the last registration, in a worker."""
        layer, result = self.carry_layer.value, self.result
        try:
            if result is None:
                raise XaimedError("Register first: carrying along uses the last registration.")
            if layer is None:
                raise XaimedError("Pick the Image or Labels layer to carry along.")
            moving = f"the moving image {self._sources[0]!r}"
            check_same_grid(Grid(result.moving_shape, result.moving_spacing,
                                 result.moving_origin, name=moving), layer)
        except XaimedError as exc:
            report_error(exc)
            return
        interpolation = self.carry_interpolation.value
        if interpolation == "auto":
            interpolation = "label" if isinstance(layer, Labels) else "linear"
        data, is_labels = layer.data, isinstance(layer, Labels)
        moving_name, fixed_name = self._sources
        registration = self._provenance  # the carried layer's provenance holds the whole
        carried = PendingInputs(layer=layer)  # registration, so a rerun can redo both
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

        self.carry_job.start(steps(), done, f"Carrying {layer.name} along", scratch=folder)
