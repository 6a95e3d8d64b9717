"""Longitudinal explanation dock widget: how the model's evidence changed from a prior scan.

Pick the prior and the current Image layers, the model, the method and how to align them (an
ANTs transform, which runs in its own process like the registration widget's, or "identity"
for scans already aligned in world coordinates). The outputs land on the current grid as
``"<Method> <what> [prior->current]"`` heatmaps: the current map, the prior's map carried
along, their change and normalised change, and the feature-level change; a table lists the
channels that changed most. Running again replaces the previous run's layers.

On a lazy (dask-backed, larger than memory) prior or current layer, the worker reads
block-mean copies of both scans (:func:`~napari_xaimed.registration.lazy.downsample`, at most
:data:`LAZY_MAX_VOXELS` voxels each, slab by slab) and explains those, with the coarse spacing
and origin, so the heatmaps land on the coarse current grid and still overlay the scans in
world coordinates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, LineEdit, SpinBox
from napari.layers import Image
from napari.utils.notifications import show_info

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.attribution import BUNDLED, METHODS, LongitudinalResult
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.longitudinal.explain import explain_change_steps
from napari_xaimed.registration import TRANSFORMS, prewarm
from napari_xaimed.viewer.heatmaps import show_heatmaps, watch
from napari_xaimed.viewer.layers import heatmap_layer, output_name, source_geometry
from napari_xaimed.viewer.widgets._base import XaimedWidget, describe_layer, layer_picker
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import ResultTable
from napari_xaimed.viewer.widgets._trust import TrustedModels
from napari_xaimed.viewer.widgets.attribution import PREDICTED, title
from napari_xaimed.viewer.widgets.registration_form import parse_iterations

IDENTITY = "identity (already aligned)"
#: Voxels of each downsampled copy explained for a lazy layer (the model sees the whole copy).
LAZY_MAX_VOXELS = 2**21


def channel_rows(result: LongitudinalResult, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` channels whose weighted feature change is largest, for the table."""
    contribution = result.channel_weights * result.channel_change
    order = np.argsort(-np.abs(contribution))[:n]
    return [{"channel": int(k), "weight": float(result.channel_weights[k]),
             "change norm": float(result.channel_change[k]),
             "weight x change": float(contribution[k])} for k in order]


class LongitudinalWidget(XaimedWidget):
    """Prior/current pickers, model, method, alignment; change heatmaps on the current grid."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.prior = layer_picker(napari_viewer, Image, "prior")
        self.current = layer_picker(napari_viewer, Image, "current")
        self.model_source = ComboBox(label="model", choices=[BUNDLED, "file"], value=BUNDLED)
        self.model_file = FileEdit(label="model file", mode="r")
        self.method = ComboBox(label="method", choices=list(METHODS), value="gradcam")
        self.target = ComboBox(label="target", choices=[PREDICTED, *map(str, range(10))],
                               value=PREDICTED, tooltip="Class explained in both scans; "
                               "default: the one predicted on the current scan")
        self.layer = LineEdit(label="feature layer", value="",
                              tooltip="Module name, e.g. features.4; empty: the model's last "
                                      "spatial feature map")
        self.alignment = ComboBox(label="alignment", choices=[*TRANSFORMS, IDENTITY],
                                  value="SyN")
        self.iterations = LineEdit(label="iterations", value="",
                                   tooltip="Per level, coarse to fine, e.g. 40, 20, 0; empty: "
                                           "ANTs' default")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 2)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.form.extend([self.prior, self.current, self.model_source, self.model_file,
                          self.method, self.target, self.layer, self.alignment,
                          self.iterations, self.seed, self.device])
        for picker in (self.prior, self.current):
            picker.changed.connect(self.update_info)
        for field in (self.prior, self.current, self.model_source, self.model_file, self.method,
                      self.target, self.alignment):
            field.changed.connect(self._clear_status)
        self.model_source.changed.connect(self._show_fields)
        self.alignment.changed.connect(self._show_fields)
        self.job = JobPanel("Explain change")
        self._layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.run)
        self.channels = ResultTable("feature channels that changed most")
        self._layout.addWidget(self.channels)
        self.result: LongitudinalResult | None = None
        self._outputs: list[Any] = []
        self.trusted = TrustedModels()
        self._show_fields()
        watch(napari_viewer)  # every heatmap here gets its colour bar and title
        self.reset_choices()
        images = [layer for layer in napari_viewer.layers if isinstance(layer, Image)]
        names = {layer.name: layer for layer in images}
        if "prior" in names and "current" in names:  # the longitudinal sample
            self.prior.value, self.current.value = names["prior"], names["current"]
        self.job.finished.connect(self._prewarm)
        self._prewarm()

    def _prewarm(self, *_: Any) -> None:
        """A process with ANTs imported waits for the next registration (saves ~2-3 s)."""
        if self.alignment.value != IDENTITY:
            prewarm(int(self.seed.value))

    def _show_fields(self, *_: Any) -> None:
        self.model_file.visible = self.model_source.value == "file"
        registering = self.alignment.value != IDENTITY
        self.iterations.visible = self.seed.visible = registering

    def _clear_status(self, *_: Any) -> None:
        """A changed input makes the last run's table and status line stale."""
        if hasattr(self, "channels") and not self.job.running:
            self.channels.set_rows([])
            self.job.status.setText("")

    def update_info(self, *_: Any) -> None:
        text = (f"prior: {describe_layer(self.prior.value)}\n"
                f"current: {describe_layer(self.current.value)}")
        if self._lazy():
            text += (f"\nlazy layer: both scans are explained on block-mean copies of at most "
                     f"{LAZY_MAX_VOXELS} voxels (coarser scale)")
        self.info.value = text

    def _lazy(self) -> bool:
        return any(layer is not None and is_lazy(layer.data)
                   for layer in (self.prior.value, self.current.value))

    def run(self) -> None:
        """Register (ANTs in its own process), explain both scans, add the change layers."""
        prior, current = self.prior.value, self.current.value
        try:
            if prior is None or current is None:
                raise XaimedError("Pick a prior and a current Image layer.")
            if prior is current:
                raise XaimedError("Prior and current are the same layer: pick two scans.")
            source = self.chosen_model(BUNDLED)
            iterations = parse_iterations(self.iterations.value)
        except XaimedError as exc:
            report_error(exc)
            return
        c_sp, c_tr = source_geometry(current)
        p_sp, p_tr = source_geometry(prior)
        alignment, method = self.alignment.value, self.method.value
        options: dict[str, Any] = {
            "method": method, "spacing": c_sp, "origin": c_tr, "prior_spacing": p_sp,
            "prior_origin": p_tr, "seed": int(self.seed.value), "device": self.device.value,
            "target": None if self.target.value == PREDICTED else int(self.target.value),
            "layer": self.layer.value.strip() or None,
        }
        if alignment == IDENTITY:
            options["registration"] = "identity"
        else:
            options["transform"] = alignment
            options["registration_params"] = ({"iterations": iterations}
                                              if iterations is not None else {})
        lazy = self._lazy()
        data = (prior.data, current.data)  # read in the worker (a lazy one: downsampled)
        names = (prior.name, current.name)
        recorded = PendingInputs(prior=prior, current=current)  # a lazy layer is not hashed
        coarse: dict[str, Any] = {}
        trust = self.trusted.trusts(source)

        def steps():
            recorded.complete()  # SHA-256 of the layers, off the GUI thread
            model = self._model(source, trust)
            # a lazy scan: explain_change_steps reads block-mean copies of both, slab by slab
            result = yield from explain_change_steps(*data, model, max_voxels=LAZY_MAX_VOXELS,
                                                     **options)
            coarse.update(result.params.get("lazy", {}))
            return result

        def done(result: LongitudinalResult, seconds: float) -> None:
            if lazy:  # the heatmaps lie on the coarse current grid
                show_info(f"{names[0]} -> {names[1]} is read lazily: explained on copies "
                          f"downsampled by {coarse['prior_factors']} and "
                          f"{coarse['current_factors']}; the heatmaps have the coarse scale "
                          f"{tuple(round(v, 3) for v in result.spacing)} mm.")
            self._show(result, names, result.spacing if lazy else c_sp,
                       result.origin if lazy else c_tr, seconds, recorded.records, alignment,
                       lazy=dict(coarse) if lazy else None)

        how = ", on downsampled copies" if lazy else ""
        self.job.start(steps(), done, f"Explaining the change {names[0]} -> {names[1]} "
                                      f"({title(method)}, {alignment}{how})",
                       retry_trusted=self.trusted.retry(self.run))

    def _show(self, result: LongitudinalResult, names: tuple[str, str],
              spacing: tuple[float, float, float], translate: tuple[float, float, float],
              seconds: float, inputs: dict[str, Any], alignment: str,
              lazy: dict[str, Any] | None = None) -> None:
        extra = {} if lazy is None else {"lazy": lazy}
        prov = provenance("longitudinal attribution", sources=list(names),
                          params={**result.to_dict(), "alignment": alignment},
                          seconds=seconds, device=result.params.get("device", "cpu"),
                          model=result.params.get("model"), inputs=inputs, **extra)
        what = title(result.method)
        maps = [(f"{what} current", result.current, result.signed, "current",
                 "relevance in the current scan"),
                (f"{what} carried", result.carried_prior, result.signed, "carried prior",
                 "relevance in the prior scan, carried onto the current grid"),
                (f"{what} change", result.change, True, "change",
                 "current - carried prior relevance: red gained, blue lost"),
                (f"{what} change normalised", result.change_normalised, True,
                 "normalised change", "each map over its max |value|, current - prior"),
                ("Feature change", result.feature_change, True, "feature change",
                 "weighted feature difference, current - prior (signed)")]
        # all kept side by side; the change shows, the others are a click away
        added = show_heatmaps(self.viewer, [
            heatmap_layer(data, output_name(name, *names), spacing, signed=signed,
                          translate=translate, provenance={**prov, "output": output},
                          values=values)
            for name, data, signed, output, values in maps], shown=2)
        for old in self._outputs:  # a previous run's layers that this run did not update
            if all(old is not new for new in added) and old in self.viewer.layers \
                    and "xaimed" in old.metadata:
                self.viewer.layers.remove(old)
        self._outputs, self.result = added, result
        self.channels.set_rows(channel_rows(result))
