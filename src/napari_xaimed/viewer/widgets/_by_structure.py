"""The explanation widget's "by structure" check: a heatmap summarised per predicted
structure (inside and around it) in the widget's table, with a bar plot of the summed
relevance inside and in the shell around each structure."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import FloatSpinBox
from napari.layers import Labels

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.explanations.structures import relevance_by_structure
from napari_xaimed.viewer.layers import source_geometry
from napari_xaimed.viewer.widgets._base import check_same_grid, layer_picker, region_names


class StructureTool:
    """The inputs of "by structure" (a prediction, an optional atlas, the shell's width) and
    the job that fills the explanation widget's table and plot."""

    def __init__(self, viewer: Any) -> None:
        self.prediction = layer_picker(viewer, Labels, "prediction")
        self.atlas = layer_picker(viewer, Labels, "atlas (optional)", nullable=True)
        self.margin = FloatSpinBox(label="around (mm)", value=5.0, min=0.1, max=100.0,
                                   step=0.5, tooltip="width of the shell around each "
                                                     "structure")
        self.fields = {"prediction": [self.prediction], "atlas": [self.atlas],
                       "margin": [self.margin]}

    def start(self, widget: Any) -> None:
        """Summarise ``widget``'s heatmap per structure of the prediction, in its worker."""
        heat_layer, pred_layer = widget.heatmap.value, self.prediction.value
        if heat_layer is None or pred_layer is None:
            raise XaimedError("Pick the heatmap and the prediction (a Labels layer) first.")
        check_same_grid(heat_layer, pred_layer)
        atlas_layer = self.atlas.value
        if atlas_layer is not None:
            check_same_grid(heat_layer, atlas_layer)
        heat, pred = widget._in_memory(("heatmap",), "the shells need the whole volume")[0], \
            pred_layer.data
        spacing, _ = source_geometry(heat_layer)
        margin, name = float(self.margin.value), heat_layer.name
        names = None if atlas_layer is None else region_names(atlas_layer)
        atlas = None if atlas_layer is None else atlas_layer.data

        def steps():
            from napari_xaimed._core.progress import Progress

            yield Progress(0, 1, "summarising the heatmap per structure")
            return relevance_by_structure(
                np.asarray(heat), np.asarray(pred), spacing=spacing, margin_mm=margin,
                regions=None if atlas is None else np.asarray(atlas), names=names)

        def done(table: Any, seconds: float) -> None:
            widget.table.set_rows(table.to_dict("records"))
            plot_structures(widget.plot, table, name)

        widget.job.start(steps(), done, f"Relevance of {name} by structure")


def plot_structures(plot: Any, table: Any, name: str) -> None:
    """Bars of the summed relevance inside and around each structure on a ``CurvePlot``."""
    axes = plot.axes
    axes.clear()
    ticks = [f"{int(r.label)}.{int(r.structure)}" for r in table.itertuples()]
    where = np.arange(len(ticks))
    axes.bar(where - 0.2, table["sum"], width=0.4, label="inside")
    axes.bar(where + 0.2, table["around_sum"], width=0.4, label="around")
    axes.set_xticks(where, ticks, fontsize=7)
    axes.set_xlabel("structure (label.number)")
    axes.set_ylabel("summed relevance")
    axes.set_title(f"{name} by structure", fontsize=9)
    if ticks:
        axes.legend(fontsize=7)
    plot.canvas.draw_idle()
