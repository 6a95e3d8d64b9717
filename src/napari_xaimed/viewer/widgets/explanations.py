"""Explanation check dock widget: can this heatmap be trusted?

One check at a time, each calling :mod:`napari_xaimed.attribution`:

- **against mask**: relevance mass and rank accuracy, AUROC, pointing game and top-k precision
  of a heatmap layer against a Labels layer (a table);
- **deletion / insertion**: both curves of a heatmap for the model (a plot and their areas);
- **ensemble**: one method over several model files, or one model with dropout kept on: mean,
  spread and reliable-relevance layers, and how consistent the members are (a table);
- **randomisation**: the cascading model-parameter randomisation test (a table and a plot);
- **compare methods**: several methods under a grid of evaluation settings, ranked (tables of
  the aggregated rank and of every setting, and a plot of the ranks);
- **by region**: a heatmap summarised per region of a Labels layer (an atlas), and its
  agreement with a reference map when one is picked (two tables);
- **by structure**: a heatmap summarised per predicted structure, inside and in a shell around
  it (a table and a bar plot; see ``_by_structure``).

No layer's voxels are read on the GUI thread: the checks hand the layers' data to the worker.
A lazy (dask) heatmap, mask or atlas is scored slab by slab there ("against mask", "by region"
without a reference map); the checks that run the model on the whole image, or rank every
voxel against a reference map, refuse lazy layers before they start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Select, SpinBox
from napari.layers import Image, Labels

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import provenance
from napari_xaimed.attribution import (
    BUNDLED,
    METHODS,
    compare_methods_steps,
    ensemble_attribute_steps,
    perturbation_curve_steps,
    randomisation_test_steps,
    reference_agreement,
)
from napari_xaimed.explanations.truth_lazy import relevance_by_region_steps, truth_scores_steps
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import add_or_update, heatmap_layer, output_name, source_geometry
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
    region_names,
)
from napari_xaimed.viewer.widgets._by_structure import StructureTool
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import CurvePlot, ResultTable
from napari_xaimed.viewer.widgets._trust import TrustedModels
from napari_xaimed.viewer.widgets.attribution import PREDICTED, title

CHECKS = ("against mask", "deletion / insertion", "ensemble", "randomisation",
          "compare methods", "by region", "by structure")
# Which inputs each check reads (the others are hidden).
FIELDS = {
    "against mask": ("heatmap", "mask", "tolerance", "top_k"),
    "deletion / insertion": ("image", "heatmap", "model", "target", "baseline", "steps",
                             "device"),
    "ensemble": ("image", "model", "members", "dropout_passes", "method", "target", "device"),
    "randomisation": ("image", "model", "method", "target", "device"),
    "compare methods": ("image", "model", "mask", "methods", "target", "device"),
    "by region": ("heatmap", "regions", "reference"),
    "by structure": ("heatmap", "prediction", "atlas", "margin"),
}


class ExplanationWidget(XaimedWidget):
    """Checks of a heatmap or of attribution methods, with tables, plots and layers."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.check = ComboBox(label="check", choices=list(CHECKS), value=CHECKS[0])
        self.image = layer_picker(napari_viewer, Image, "image")
        self.heatmap = layer_picker(napari_viewer, Image, "heatmap")
        self.mask = layer_picker(napari_viewer, Labels, "truth mask", nullable=True)
        self.regions = layer_picker(napari_viewer, Labels, "regions (atlas)")
        self.reference = layer_picker(napari_viewer, Image, "reference map", nullable=True)
        self.model_source = ComboBox(label="model", choices=[BUNDLED, "file"], value=BUNDLED)
        self.model_file = FileEdit(label="model file", mode="r")
        self.members = FileEdit(label="ensemble files", mode="rm",
                                tooltip="Two or more model files; leave empty and set dropout "
                                        "passes to use one model with dropout kept on")
        self.dropout_passes = SpinBox(label="dropout passes", value=0, min=0, max=100,
                                      tooltip="0: an ensemble of the files above")
        self.method = ComboBox(label="method", choices=list(METHODS), value="saliency")
        self.methods = Select(label="methods", choices=list(METHODS),
                              value=["saliency", "smoothgrad", "integrated_gradients",
                                     "gradcam"])
        self.target = ComboBox(label="target", choices=[PREDICTED, *map(str, range(10))],
                               value=PREDICTED)
        self.tolerance = FloatSpinBox(label="pointing tolerance (mm)", value=2.0, min=0.0,
                                      max=100.0, step=0.5)
        self.top_k = FloatSpinBox(label="top-k (share of voxels)", value=0.01, min=0.0001,
                                  max=1.0, step=0.005)
        self.baseline = ComboBox(label="baseline", choices=["blur", "mean", "min", "zero"],
                                 value="blur")
        self.steps = SpinBox(label="curve steps", value=20, min=1, max=200)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self._fields = {
            "image": [self.image], "heatmap": [self.heatmap], "mask": [self.mask],
            "regions": [self.regions], "reference": [self.reference],
            "model": [self.model_source, self.model_file], "members": [self.members],
            "dropout_passes": [self.dropout_passes], "method": [self.method],
            "methods": [self.methods], "target": [self.target], "tolerance": [self.tolerance],
            "top_k": [self.top_k], "baseline": [self.baseline], "steps": [self.steps],
            "device": [self.device],
        }
        self.structures = StructureTool(napari_viewer)  # "by structure"
        self._fields.update(self.structures.fields)
        self.form.extend([self.check, *(w for ws in self._fields.values() for w in ws)])
        self.check.changed.connect(self._show_fields)
        self.model_source.changed.connect(self._show_fields)
        self.heatmap.changed.connect(self.update_info)
        self.job = JobPanel("Check")
        self.trusted = TrustedModels()
        self._layout.addWidget(self.job)
        self.table = ResultTable("explanation check")
        self.details = ResultTable("settings")
        self.plot = CurvePlot("share of voxels", "score")
        for view in (self.table, self.details, self.plot):
            self._layout.addWidget(view)
        self.job.run_button.clicked.connect(self.run)
        self._show_fields()
        self.reset_choices()

    def _show_fields(self, *_: Any) -> None:
        wanted = FIELDS[self.check.value]
        for key, widgets in self._fields.items():
            for widget in widgets:
                widget.visible = key in wanted
        if "model" in wanted:
            self.model_file.visible = self.model_source.value == "file"
        self.details.setVisible(self.check.value in ("compare methods", "by region"))

    def update_info(self, *_: Any) -> None:
        self.info.value = describe_layer(self.heatmap.value if "heatmap" in FIELDS.get(
            self.check.value, ()) else self.image.value)

    def _loader(self, models: Any) -> Any:
        """A function that loads ``models`` (a source, or a list of files) in the worker,
        each file whose code the user let run (as it is now) with ``trust=True``."""
        from napari_xaimed.attribution import load_model

        many = isinstance(models, list)
        trust = {str(m): self.trusted.trusts(m) for m in (models if many else [models])}

        def load() -> Any:
            loaded = [load_model(m, trust=trust[str(m)]) for m in (models if many else [models])]
            return loaded if many else loaded[0]

        return load

    def _target(self) -> int | None:
        return None if self.target.value == PREDICTED else int(self.target.value)

    def _layer(self, key: str) -> Any:
        layer = {"image": self.image, "heatmap": self.heatmap, "mask": self.mask,
                 "regions": self.regions, "reference": self.reference}[key].value
        if layer is None:
            raise XaimedError(f"Pick the {key} layer first.")
        return layer

    def _in_memory(self, keys: tuple[str, ...], what: str) -> list[Any]:
        """The data of the picked layers (not read: numpy for in-memory layers, to be read in
        the worker); a lazy one is refused, since ``what`` needs the whole volume at once."""
        data = []
        for key in keys:
            layer = self._layer(key)
            if is_lazy(layer.data):
                raise XaimedError(
                    f"{layer.name!r} is read lazily (larger than memory): {what}, which is "
                    "not done slab by slab. Load a crop into memory with "
                    "viewer.add_image(layer.data[z0:z1].compute()) (the image and its "
                    "heatmap alike) and check that.")
            data.append(layer.data)
        return data

    def run(self) -> None:
        """Start the chosen check in a worker."""
        try:
            job = {"against mask": self._against_mask,
                   "deletion / insertion": self._curves,
                   "ensemble": self._ensemble,
                   "randomisation": self._randomisation,
                   "compare methods": self._compare,
                   "by region": self._by_region,
                   "by structure": lambda: self.structures.start(self)}[self.check.value]
            job()
        except XaimedError as exc:
            report_error(exc)

    def _against_mask(self) -> None:
        heat, mask = self._layer("heatmap").data, self._layer("mask").data
        check_same_grid(self.heatmap.value, self.mask.value)
        spacing, _ = source_geometry(self.heatmap.value)
        tolerance, k = self.tolerance.value, float(self.top_k.value)
        name = self.heatmap.value.name

        def steps():  # numpy or dask alike, a step per slab
            return (yield from truth_scores_steps(heat, mask, spacing=spacing,
                                                  tolerance_mm=tolerance, k=k))

        def done(scores: dict[str, float], seconds: float) -> None:
            self.table.set_rows([{"heatmap": name, **scores}])

        self.job.start(steps(), done, f"Scoring {name} against the mask")

    def _by_region(self) -> None:
        heat, regions = self._layer("heatmap").data, self._layer("regions").data
        check_same_grid(self.heatmap.value, self.regions.value)
        reference = None
        if self.reference.value is not None:
            check_same_grid(self.heatmap.value, self.reference.value)
            heat, regions, reference = self._in_memory(
                ("heatmap", "regions", "reference"),
                "the agreement with a reference map ranks every voxel at once (Leave the "
                "reference map empty for the table by region alone)")
        spacing, _ = source_geometry(self.heatmap.value)
        names = region_names(self.regions.value)
        name = self.heatmap.value.name

        def steps():  # numpy or dask alike, a step per slab
            table = yield from relevance_by_region_steps(heat, regions, names=names,
                                                         spacing=spacing)
            agreement = (None if reference is None else  # in memory: refused above if lazy
                         reference_agreement(np.asarray(heat), np.asarray(reference),
                                             regions=np.asarray(regions)))
            return table, agreement

        def done(result: tuple, seconds: float) -> None:
            table, agreement = result
            self.table.set_rows(table.to_dict("records"))
            self.details.set_rows([] if agreement is None else
                                  [{"heatmap": name, **agreement.to_dict()}])

        self.job.start(steps(), done, f"Relevance of {name} by region")

    def _curves(self) -> None:
        volume, heat = self._in_memory(("image", "heatmap"),
                                       "deletion and insertion run the model on the whole "
                                       "image")
        if np.shape(heat) != np.shape(volume):
            raise XaimedError(f"the heatmap {np.shape(heat)} must lie on the image's grid "
                              f"{np.shape(volume)}: pick the heatmap made from this image.")
        check_same_grid(self.image.value, self.heatmap.value)
        spacing, _ = source_geometry(self.image.value)
        load, target = self._loader(self.chosen_model(BUNDLED)), self._target()
        kwargs = dict(target=target, baseline=self.baseline.value, steps=self.steps.value,
                      spacing=spacing, device=self.device.value)
        name = self.heatmap.value.name

        def steps():
            model = load()
            image, relevance = np.asarray(volume), np.asarray(heat)
            deletion = yield from perturbation_curve_steps(model, image, relevance,
                                                           "deletion", **kwargs)
            insertion = yield from perturbation_curve_steps(model, image, relevance,
                                                            "insertion", **kwargs)
            return deletion, insertion

        def done(curves: tuple, seconds: float) -> None:
            deletion, insertion = curves
            self.plot.plot(deletion.fractions, {"deletion": deletion.scores,
                                                "insertion": insertion.scores},
                           title=f"{name}: class {deletion.target}")
            self.table.set_rows([{"heatmap": name, "target": deletion.target,
                                  "deletion area": deletion.area,
                                  "insertion area": insertion.area,
                                  "baseline": kwargs["baseline"], "steps": kwargs["steps"]}])

        self.job.start(steps(), done, f"Deletion and insertion of {name}",
                       retry_trusted=self.trusted.retry(self.run))

    def _ensemble(self) -> None:
        (volume,) = self._in_memory(("image",), "an ensemble runs the models on the whole "
                                                "image")
        spacing, translate = source_geometry(self.image.value)
        passes = int(self.dropout_passes.value)
        if passes:
            models: Any = self.chosen_model(BUNDLED)
        else:
            files = [str(f) for f in (self.members.value or ()) if str(f) not in ("", ".")]
            if len(files) < 2:
                raise XaimedError("Choose two or more model files, or set dropout passes for "
                                  "one model with dropout kept on.")
            models = files
        method, target, device = self.method.value, self._target(), self.device.value
        image_name = self.image.value.name
        load = self._loader(models)

        def steps():
            return (yield from ensemble_attribute_steps(
                load(), np.asarray(volume), method, dropout_passes=passes or None, target=target,
                device=device, spacing=spacing))

        def done(result: Any, seconds: float) -> None:
            prov = provenance("attribution ensemble", sources=[image_name], seconds=seconds,
                              params={"method": method, **result.params,
                                      "target_index": result.target,
                                      "consistency": result.consistency.to_dict()})
            what = title(method)
            signed = METHODS[method].signed
            for label, data, is_signed in (("mean", result.mean, signed),
                                           ("std", result.std, False),
                                           ("reliable", result.reliable, signed)):
                add_or_update(self.viewer, heatmap_layer(
                    data, output_name(f"Ensemble {label} {what}", image_name), spacing,
                    signed=is_signed, translate=translate, provenance=prov))
            self.table.set_rows([{
                "method": method, "members": len(result.members), "target": result.target,
                "mean spearman": result.consistency.mean_spearman,
                "mean top-1% overlap": result.consistency.mean_top_overlap}])

        self.job.start(steps(), done, f"Ensemble {method} on {image_name}",
                       retry_trusted=self.trusted.retry(self.run))

    def _randomisation(self) -> None:
        (volume,) = self._in_memory(("image",), "the randomisation test runs the model on the "
                                                "whole image")
        spacing, _ = source_geometry(self.image.value)
        load, method = self._loader(self.chosen_model(BUNDLED)), self.method.value
        target, device = self._target(), self.device.value

        def steps():
            return (yield from randomisation_test_steps(load(), np.asarray(volume), method,
                                                        target=target, device=device,
                                                        spacing=spacing))

        def done(result: Any, seconds: float) -> None:
            rows = [{"randomised down to": layer, "spearman": s, "ssim": m}
                    for layer, s, m in zip(result.layers, result.spearman, result.ssim,
                                           strict=True)]
            self.table.set_rows(rows)
            steps_axis = list(range(1, len(rows) + 1))
            self.plot.plot(steps_axis, {"spearman": result.spearman, "ssim": result.ssim},
                           title=f"{title(method)}: layers randomised from the top",
                           xlabel="layers randomised", ylabel="similarity", ylim=(-1, 1.02))

        self.job.start(steps(), done, f"Randomisation test of {method}",
                       retry_trusted=self.trusted.retry(self.run))

    def _compare(self) -> None:
        methods = list(self.methods.value)
        if len(methods) < 2:
            raise XaimedError("Pick at least two methods to compare.")
        volume, *masks = self._in_memory(
            ("image",) if self.mask.value is None else ("image", "mask"),
            "comparing methods runs the model on the whole image")
        spacing, _ = source_geometry(self.image.value)
        load = self._loader(self.chosen_model(BUNDLED))
        target, device = self._target(), self.device.value

        def steps():
            mask = np.asarray(masks[0]) != 0 if masks else None
            return (yield from compare_methods_steps(load(), np.asarray(volume), methods,
                                                     mask=mask, target=target,
                                                     spacing=spacing, device=device))

        def done(result: Any, seconds: float) -> None:
            summary = result.to_dataframe()
            summary["winner changes"] = result.winner_changes
            self.table.set_rows(summary.to_dict("records"))
            self.details.set_rows(result.settings_dataframe().to_dict("records"))
            axis = list(range(1, len(result.settings) + 1))
            self.plot.plot(axis, {m: result.ranks[:, j] for j, m in enumerate(result.methods)},
                           title="rank per evaluation setting (1 = best)",
                           xlabel="setting", ylabel="rank", ylim=(0.5, len(methods) + 0.5))

        self.job.start(steps(), done, f"Comparing {', '.join(methods)}",
                       retry_trusted=self.trusted.retry(self.run))


