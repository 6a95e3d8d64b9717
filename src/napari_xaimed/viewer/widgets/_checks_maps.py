"""The explanation check's tools that score a heatmap against label maps, with no model:
"against mask" (relevance mass and rank accuracy, AUROC, pointing game, top-k precision
against a truth mask) and "by region" (a heatmap per region of an atlas, and its agreement
with a reference map). A lazy (dask) heatmap, mask or atlas is scored slab by slab in the
worker; the agreement with a reference map ranks every voxel at once and refuses lazy layers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import FloatSpinBox
from napari.layers import Image, Labels

from napari_xaimed.attribution import reference_agreement
from napari_xaimed.explanations.truth_lazy import relevance_by_region_steps, truth_scores_steps
from napari_xaimed.viewer.layers import source_geometry
from napari_xaimed.viewer.widgets._base import check_same_grid, layer_picker, region_names


class MaskTool:
    """"against mask": the pointing tolerance and the top-k share; the heatmap and the truth
    mask are the dock's."""


    def __init__(self, viewer: Any) -> None:
        self.tolerance = FloatSpinBox(label="pointing tolerance (mm)", value=2.0, min=0.0,
                                      max=100.0, step=0.5)
        self.top_k = FloatSpinBox(label="top-k (share of voxels)", value=0.01, min=0.0001,
                                  max=1.0, step=0.005)
        self.fields = {"tolerance": [self.tolerance], "top_k": [self.top_k]}

    def start(self, widget: Any) -> None:
        """Score ``widget``'s heatmap against its mask, in its worker."""
        heat, mask = widget._layer("heatmap").data, widget._layer("mask").data
        check_same_grid(widget.heatmap.value, widget.mask.value)
        spacing, _ = source_geometry(widget.heatmap.value)
        tolerance, k = self.tolerance.value, float(self.top_k.value)
        name = widget.heatmap.value.name

        def steps():  # numpy or dask alike, a step per slab
            return (yield from truth_scores_steps(heat, mask, spacing=spacing,
                                                  tolerance_mm=tolerance, k=k))

        def done(scores: dict[str, float], seconds: float) -> None:
            widget.table.set_rows([{"heatmap": name, **scores}])

        widget.job.start(steps(), done, f"Scoring {name} against the mask")


class RegionTool:
    """"by region": the atlas and an optional reference map; the heatmap is the dock's."""


    def __init__(self, viewer: Any) -> None:
        self.regions = layer_picker(viewer, Labels, "regions (atlas)")
        self.reference = layer_picker(viewer, Image, "reference map", nullable=True)
        self.fields = {"regions": [self.regions], "reference": [self.reference]}

    def start(self, widget: Any) -> None:
        """Table ``widget``'s heatmap by region (and against the reference), in its worker."""
        heat, regions = widget._layer("heatmap").data, widget._layer("regions").data
        check_same_grid(widget.heatmap.value, self.regions.value)
        reference = None
        if self.reference.value is not None:
            check_same_grid(widget.heatmap.value, self.reference.value)
            heat, regions, reference = widget._in_memory(
                ("heatmap", "regions", "reference"),
                "the agreement with a reference map ranks every voxel at once (Leave the "
                "reference map empty for the table by region alone)")
        spacing, _ = source_geometry(widget.heatmap.value)
        names = region_names(self.regions.value)
        name = widget.heatmap.value.name

        def steps():  # numpy or dask alike, a step per slab
            table = yield from relevance_by_region_steps(heat, regions, names=names,
                                                         spacing=spacing)
            agreement = (None if reference is None else  # in memory: refused above if lazy
                         reference_agreement(np.asarray(heat), np.asarray(reference),
                                             regions=np.asarray(regions)))
            return table, agreement

        def done(result: tuple, seconds: float) -> None:
            table, agreement = result
            widget.table.set_rows(table.to_dict("records"))
            widget.details.set_rows([] if agreement is None else
                                    [{"heatmap": name, **agreement.to_dict()}])

        widget.job.start(steps(), done, f"Relevance of {name} by region")
