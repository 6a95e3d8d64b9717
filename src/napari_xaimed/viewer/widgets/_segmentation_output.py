"""Where a segmentation lands in the viewer: its labels, class probabilities and preview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import provenance
from napari_xaimed.io.label_names import nnunet_label_names
from napari_xaimed.segmentation import SegmentationResult
from napari_xaimed.viewer.heatmaps import show_heatmaps
from napari_xaimed.viewer.layers import add_or_update, heatmap_layer, labels_layer, output_name
from napari_xaimed.viewer.widgets._legend import Legend, layer_entries
from napari_xaimed.viewer.widgets._scratch import keep_while_shown

#: How a method is named in its output layers.
METHOD_TITLES = {"threshold": "Threshold", "otsu": "Otsu", "multiotsu": "Multi-Otsu",
                 "kmeans": "K-means", "atropos": "Atropos", "model": "Model"}


def method_title(method: str) -> str:
    """``"kmeans"`` -> ``"K-means"``."""
    return METHOD_TITLES.get(method, method.replace("_", " ").capitalize())


def segmentation_name(method: str, source: str) -> str:
    """``"Otsu segmentation [ct]"``: each method its own layer, so results sit side by side
    and a rerun of one method replaces only its own."""
    return output_name(f"{method_title(method)} segmentation", source)


def probability_name(k: int, source: str, foreground: bool = False,
                     method: str | None = None) -> str:
    """``"K-means class 2 probability [mri]"``, or ``"Model foreground probability [mri]"``
    for a model (without ``method``: ``"Class 2 probability [mri]"``)."""
    what = "foreground probability" if foreground else f"class {k} probability"
    what = f"{method_title(method)} {what}" if method else what[0].upper() + what[1:]
    return output_name(what, source)


def class_names(result: SegmentationResult) -> dict[int, str]:
    """Names of a class segmentation's labels: nnU-Net's dataset.json, the model's classes
    (its config), or the classes by brightness (1 the darkest); ``{}`` for instances and
    masks, whose values are no classes."""
    if result.kind != "classes":
        return {}
    model = result.facts.get("model") or {}
    if model.get("kind") == "nnU-Net v2" and model.get("source"):
        try:  # its dataset.json, which also names region-based labels by their value
            return nnunet_label_names(model["source"])
        except XaimedError:
            pass
    given = result.facts.get("classes") or []
    if given:
        return {k: str(name) for k, name in enumerate(given) if k > 0}
    n = int(result.params.get("n_classes") or result.params.get("classes") or 0)
    names = {k: f"class {k}" for k in range(1, n + 1)}
    if n >= 2:
        names[1] += " (darkest)"
        names[n] += " (brightest)"
    return names


def names_features(names: dict[int, str]) -> dict[str, list]:
    """A Labels layer's ``features`` naming its values (napari's status bar shows them)."""
    values = sorted(names)
    return {"index": [0, *values], "name": ["background", *(names[v] for v in values)]}


class SegmentationOutputs:
    """The output layers of :class:`~napari_xaimed.viewer.widgets.SegmentationWidget`."""

    viewer: Any
    method: Any
    legend: Legend
    _probabilities: dict[tuple[str, str], list[str]]

    def _show_preview(self, layer: Any, z: int, mask: np.ndarray,
                      spacing: tuple[float, float, float],
                      translate: tuple[float, float, float]) -> None:
        prov = provenance("segmentation preview", sources=[layer.name],
                          params={"method": self.method.value, "slice": z,
                                  **self._plain_params()})
        at = (translate[0] + z * spacing[0], *translate[1:])
        add_or_update(self.viewer, labels_layer(
            mask[np.newaxis], output_name("Segmentation preview", layer.name), spacing,
            translate=at, provenance=prov))


    def _show_result(self, result: SegmentationResult, source: str,
                     spacing: tuple[float, float, float], translate: tuple[float, float, float],
                     params: dict[str, Any], seconds: float,
                     inputs: dict[str, Any] | None = None, scratch: Path | None = None) -> None:
        # facts apart, as the CLI keeps them: merged into params, the model's description
        # replaced the model parameter and the device found replaced "auto", so the
        # parameters no longer reran the segmentation
        prov = provenance("segmentation", sources=[source], seconds=seconds,
                          params={"method": result.method, **params}, facts=result.facts,
                          label_kind=result.kind, inputs=inputs)
        names = class_names(result)
        named = {"features": names_features(names)} if names else {}
        shown = add_or_update(self.viewer, labels_layer(
            result.labels, segmentation_name(result.method, source), spacing,
            translate=translate, provenance=prov, **named))
        keep_while_shown(self.viewer, shown, scratch)  # a lazy result reads its store there
        self._show_legend(shown, result, names)
        preview = output_name("Segmentation preview", source)
        if preview in self.viewer.layers and "xaimed" in self.viewer.layers[preview].metadata:
            self.viewer.layers.remove(preview)  # the slice it showed is now in the result
        maps = []
        if result.probabilities is not None:
            foreground = result.facts.get("probabilities") == "foreground"
            heatmaps = []
            for k, probability in enumerate(result.probabilities, start=1):
                name = probability_name(k, source, foreground, result.method)
                kind = {"kind": "foreground probability"} if foreground else {
                    "kind": "class probability", "class": k}
                heatmaps.append(heatmap_layer(
                    probability, name, spacing, signed=False, translate=translate,
                    provenance={**prov, **kind}, contrast_limits=(0.0, 1.0)))
                maps.append(name)
            # a foreground map shows (the other maps of this image hidden); class maps are
            # added hidden, the labels already show the classes
            for heat in show_heatmaps(self.viewer, heatmaps, shown=-1 if foreground else None):
                keep_while_shown(self.viewer, heat, scratch)
        key = (source, result.method)
        for stale in set(self._probabilities.get(key, [])) - set(maps):
            if stale in self.viewer.layers and "xaimed" in self.viewer.layers[stale].metadata:
                self.viewer.layers.remove(stale)
        self._probabilities[key] = maps

    def _show_legend(self, layer: Any, result: SegmentationResult,
                     names: dict[int, str]) -> None:
        """The classes' colours and names; for instances, how many there are."""
        title = f"{layer.name}:"
        if names:
            self.legend.set_entries([(c, f"{v}: {n}") for v, c, n in layer_entries(layer, names)],
                                    title)
        elif result.kind == "instances":
            count = result.facts.get("instances", result.facts.get("n_instances"))
            self.legend.set_entries([], title, f"{count} instances, each its own colour "
                                    "(hover for its number).")
        else:
            self.legend.set_entries([(c, f"{v}: foreground") for v, c, _ in
                                     layer_entries(layer, values=[1])], title)
