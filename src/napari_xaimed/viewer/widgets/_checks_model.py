"""The explanation check's tools that run a model on the whole image: "deletion / insertion"
(both curves of a heatmap and their areas), "randomisation" (the cascading model-parameter
randomisation test) and "compare methods" (several methods under a grid of evaluation
settings, ranked). They need the whole volume in memory and refuse lazy layers before they
start."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Select, SpinBox

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import (
    BUNDLED,
    METHODS,
    compare_methods_steps,
    perturbation_curve_steps,
    randomisation_test_steps,
)
from napari_xaimed.viewer.layers import source_geometry
from napari_xaimed.viewer.widgets._base import check_same_grid
from napari_xaimed.viewer.widgets.attribution import title


class CurvesTool:
    """"deletion / insertion": the baseline and the number of steps of the curves."""


    def __init__(self, viewer: Any) -> None:
        self.baseline = ComboBox(label="baseline", choices=["blur", "mean", "min", "zero"],
                                 value="blur")
        self.steps = SpinBox(label="curve steps", value=20, min=1, max=200)
        self.fields = {"baseline": [self.baseline], "steps": [self.steps]}

    def start(self, widget: Any) -> None:
        """Both curves of ``widget``'s heatmap for its model, in its worker."""
        volume, heat = widget._in_memory(("image", "heatmap"),
                                         "deletion and insertion run the model on the whole "
                                         "image")
        if np.shape(heat) != np.shape(volume):
            raise XaimedError(f"the heatmap {np.shape(heat)} must lie on the image's grid "
                              f"{np.shape(volume)}: pick the heatmap made from this image.")
        check_same_grid(widget.image.value, widget.heatmap.value)
        spacing, _ = source_geometry(widget.image.value)
        load, target = widget._loader(widget.chosen_model(BUNDLED)), widget._target()
        kwargs = dict(target=target, baseline=self.baseline.value, steps=self.steps.value,
                      spacing=spacing, device=widget.device.value)
        name = widget.heatmap.value.name

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
            widget.plot.plot(deletion.fractions, {"deletion": deletion.scores,
                                                  "insertion": insertion.scores},
                             title=f"{name}: class {deletion.target}")
            widget.table.set_rows([{"heatmap": name, "target": deletion.target,
                                    "deletion area": deletion.area,
                                    "insertion area": insertion.area,
                                    "baseline": kwargs["baseline"], "steps": kwargs["steps"]}])

        widget.job.start(steps(), done, f"Deletion and insertion of {name}",
                         retry_trusted=widget.trusted.retry(widget.run))


class RandomisationTool:
    """"randomisation": no inputs of its own (the image, model, method and target are the
    dock's)."""


    def __init__(self, viewer: Any) -> None:
        self.fields: dict[str, list[Any]] = {}

    def start(self, widget: Any) -> None:
        """The randomisation test of ``widget``'s method, in its worker."""
        (volume,) = widget._in_memory(("image",), "the randomisation test runs the model on "
                                                  "the whole image")
        spacing, _ = source_geometry(widget.image.value)
        load, method = widget._loader(widget.chosen_model(BUNDLED)), widget.method.value
        target, device = widget._target(), widget.device.value

        def steps():
            return (yield from randomisation_test_steps(load(), np.asarray(volume), method,
                                                        target=target, device=device,
                                                        spacing=spacing))

        def done(result: Any, seconds: float) -> None:
            rows = [{"randomised down to": layer, "spearman": s, "ssim": m}
                    for layer, s, m in zip(result.layers, result.spearman, result.ssim,
                                           strict=True)]
            widget.table.set_rows(rows)
            steps_axis = list(range(1, len(rows) + 1))
            widget.plot.plot(steps_axis, {"spearman": result.spearman, "ssim": result.ssim},
                             title=f"{title(method)}: layers randomised from the top",
                             xlabel="layers randomised", ylabel="similarity",
                             ylim=(-1, 1.02))

        widget.job.start(steps(), done, f"Randomisation test of {method}",
                         retry_trusted=widget.trusted.retry(widget.run))


class CompareTool:
    """"compare methods": the methods to rank (the truth mask, optional, is the dock's)."""


    def __init__(self, viewer: Any) -> None:
        self.methods = Select(label="methods", choices=list(METHODS),
                              value=["saliency", "smoothgrad", "integrated_gradients",
                                     "gradcam"])
        self.fields = {"methods": [self.methods]}

    def start(self, widget: Any) -> None:
        """Rank the methods on ``widget``'s image, in its worker."""
        methods = list(self.methods.value)
        if len(methods) < 2:
            raise XaimedError("Pick at least two methods to compare.")
        volume, *masks = widget._in_memory(
            ("image",) if widget.mask.value is None else ("image", "mask"),
            "comparing methods runs the model on the whole image")
        spacing, _ = source_geometry(widget.image.value)
        load = widget._loader(widget.chosen_model(BUNDLED))
        target, device = widget._target(), widget.device.value

        def steps():
            mask = np.asarray(masks[0]) != 0 if masks else None
            return (yield from compare_methods_steps(load(), np.asarray(volume), methods,
                                                     mask=mask, target=target,
                                                     spacing=spacing, device=device))

        def done(result: Any, seconds: float) -> None:
            summary = result.to_dataframe()
            summary["winner changes"] = result.winner_changes
            widget.table.set_rows(summary.to_dict("records"))
            widget.details.set_rows(result.settings_dataframe().to_dict("records"))
            axis = list(range(1, len(result.settings) + 1))
            widget.plot.plot(axis, {m: result.ranks[:, j] for j, m in
                                    enumerate(result.methods)},
                             title="rank per evaluation setting (1 = best)",
                             xlabel="setting", ylabel="rank", ylim=(0.5, len(methods) + 0.5))

        widget.job.start(steps(), done, f"Comparing {', '.join(methods)}",
                         retry_trusted=widget.trusted.retry(widget.run))
