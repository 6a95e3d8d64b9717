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

from magicgui.widgets import ComboBox, FileEdit
from napari.layers import Image, Labels

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import BUNDLED, METHODS
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.widgets._base import XaimedWidget, describe_layer, layer_picker
from napari_xaimed.viewer.widgets._by_structure import StructureTool
from napari_xaimed.viewer.widgets._checks_ensemble import EnsembleTool
from napari_xaimed.viewer.widgets._checks_maps import MaskTool, RegionTool
from napari_xaimed.viewer.widgets._checks_model import CompareTool, CurvesTool, RandomisationTool
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import CurvePlot, ResultTable
from napari_xaimed.viewer.widgets._trust import TrustedModels
from napari_xaimed.viewer.widgets.attribution import PREDICTED

CHECKS = ("against mask", "deletion / insertion", "ensemble", "randomisation",
          "compare methods", "by region", "by structure")
# Which inputs each check reads (the others are hidden): the dock's shared ones, then the
# check's own (its tool's fields).
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
#: The tool that runs each check (its fields and its job; see the ``_checks_*`` modules).
TOOLS = {"against mask": MaskTool, "deletion / insertion": CurvesTool,
         "ensemble": EnsembleTool, "randomisation": RandomisationTool,
         "compare methods": CompareTool, "by region": RegionTool,
         "by structure": StructureTool}


class ExplanationWidget(XaimedWidget):
    """Checks of a heatmap or of attribution methods, with tables, plots and layers.

    The dock holds the inputs the checks share (image, heatmap, truth mask, model, method,
    target, device), the results (a table, a second table of details, a plot) and one tool per
    check (:data:`TOOLS`) with the check's own inputs and its job. Each tool's inputs are also
    attributes of the dock (``widget.top_k``, ``widget.members``...), as before the split.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.check = ComboBox(label="check", choices=list(CHECKS), value=CHECKS[0])
        self.image = layer_picker(napari_viewer, Image, "image")
        self.heatmap = layer_picker(napari_viewer, Image, "heatmap")
        self.mask = layer_picker(napari_viewer, Labels, "truth mask", nullable=True)
        self.model_source = ComboBox(label="model", choices=[BUNDLED, "file"], value=BUNDLED)
        self.model_file = FileEdit(label="model file", mode="r")
        self.method = ComboBox(label="method", choices=list(METHODS), value="saliency")
        self.target = ComboBox(label="target", choices=[PREDICTED, *map(str, range(10))],
                               value=PREDICTED)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self._fields: dict[str, list[Any]] = {
            "image": [self.image], "heatmap": [self.heatmap], "mask": [self.mask],
            "model": [self.model_source, self.model_file], "method": [self.method],
            "target": [self.target],
        }
        self.tools = {check: tool(napari_viewer) for check, tool in TOOLS.items()}
        for tool in self.tools.values():
            self._fields.update(tool.fields)
            for key, (field, *_) in tool.fields.items():
                setattr(self, key, field)  # widget.top_k, widget.members...
        self._fields["device"] = [self.device]
        self.structures = self.tools["by structure"]
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
            self.tools[self.check.value].start(self)
        except XaimedError as exc:
            report_error(exc)
