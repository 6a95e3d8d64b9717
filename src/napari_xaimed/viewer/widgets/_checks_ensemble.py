"""The explanation check's "ensemble" tool: one method over several model files, or one model
with dropout kept on; mean, spread and reliable-relevance layers, and how consistent the
members are (a table)."""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import FileEdit, SpinBox

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import provenance
from napari_xaimed.attribution import BUNDLED, METHODS, ensemble_attribute_steps
from napari_xaimed.viewer.heatmaps import show_heatmaps, watch
from napari_xaimed.viewer.layers import heatmap_layer, output_name, source_geometry
from napari_xaimed.viewer.widgets.attribution import title


class EnsembleTool:
    """"ensemble": the member files, or the number of dropout passes of one model."""


    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        watch(viewer)  # every heatmap here gets its colour bar and title
        self.members = FileEdit(label="ensemble files", mode="rm",
                                tooltip="Two or more model files; leave empty and set dropout "
                                        "passes to use one model with dropout kept on")
        self.dropout_passes = SpinBox(label="dropout passes", value=0, min=0, max=100,
                                      tooltip="0: an ensemble of the files above")
        self.fields = {"members": [self.members], "dropout_passes": [self.dropout_passes]}

    def start(self, widget: Any) -> None:
        """The ensemble of ``widget``'s method on its image, in its worker."""
        (volume,) = widget._in_memory(("image",), "an ensemble runs the models on the whole "
                                                  "image")
        spacing, translate = source_geometry(widget.image.value)
        passes = int(self.dropout_passes.value)
        if passes:
            models: Any = widget.chosen_model(BUNDLED)
        else:
            files = [str(f) for f in (self.members.value or ()) if str(f) not in ("", ".")]
            if len(files) < 2:
                raise XaimedError("Choose two or more model files, or set dropout passes for "
                                  "one model with dropout kept on.")
            models = files
        method, target, device = widget.method.value, widget._target(), widget.device.value
        image_name = widget.image.value.name
        load = widget._loader(models)

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
            # side by side with their colour bars; the mean shows, spread and reliable
            # relevance are a click away
            show_heatmaps(self.viewer, [heatmap_layer(
                data, output_name(f"Ensemble {label} {what}", image_name), spacing,
                signed=is_signed, translate=translate, provenance=prov)
                for label, data, is_signed in (("mean", result.mean, signed),
                                               ("std", result.std, False),
                                               ("reliable", result.reliable, signed))],
                shown=0)
            widget.table.set_rows([{
                "method": method, "members": len(result.members), "target": result.target,
                "mean spearman": result.consistency.mean_spearman,
                "mean top-1% overlap": result.consistency.mean_top_overlap}])

        widget.job.start(steps(), done, f"Ensemble {method} on {image_name}",
                         retry_trusted=widget.trusted.retry(widget.run))
