"""The Cases widget: a model's latent space over a cohort (embedded on Dask), as a scatter in
which a click opens that case in the viewer, the cases most similar to the image in the viewer,
how much of each metadata column (age, sex, scanner) the space holds along the decision, and
concept explanations (TCAV, regression concept vectors) from the same case list."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, LineEdit, PushButton, SpinBox
from qtpy.QtWidgets import QLabel, QTabWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import provenance
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import add_or_update, image_layer
from napari_xaimed.viewer.widgets._base import XaimedWidget, layer_picker
from napari_xaimed.viewer.widgets._concepts import ConceptTool
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._latent_scatter import LatentScatter
from napari_xaimed.viewer.widgets._results import ResultTable, wrapping
from napari_xaimed.viewer.widgets._trust import TrustedModels
from napari_xaimed.viewer.widgets.cohort import (
    _records,
    output_folder,
    read_case_steps,
    recorded_files,
)

CASE_LAYER = "Case image"
NO_COLOUR = "predicted class"


class CasesWidget(XaimedWidget):
    """Embed a cohort at a model's layer, explore the latent space, find similar cases."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.csv = FileEdit(label="case list (CSV)", mode="r", filter="*.csv",
                            tooltip="case_id,image and metadata columns (age, sex, scanner...)")
        self.out = FileEdit(label="output folder", mode="d",
                            tooltip="Embeddings and tables; running again into it embeds only "
                            "the cases not yet done")
        self.model = LineEdit(label="model", value="bundled",
                              tooltip="TorchScript file, state dict with its JSON, MONAI bundle "
                              "folder, or bundled (the lesion classifier)")
        self.layer = LineEdit(label="layer", value="",
                              tooltip="Layer to embed at; empty: the last spatial feature map")
        self.confounders = LineEdit(label="confounders", value="",
                                    tooltip="Metadata columns to score, comma-separated, e.g. "
                                    "age,sex,scanner")
        self.projection = ComboBox(label="projection", choices=["pca", "umap"], value="pca")
        self.workers = SpinBox(label="local workers", value=os.cpu_count() or 1, min=1, max=256)
        self.colour = ComboBox(label="colour by", choices=[NO_COLOUR], value=NO_COLOUR)
        self.colour.changed.connect(self.redraw)
        self.image = layer_picker(napari_viewer, _image_type(), "image")
        self.image.tooltip = "The volume whose most similar cases to find"
        self.k = SpinBox(label="k similar", value=5, min=1, max=1000)
        self.open_button = PushButton(text="Open results")
        self.open_button.changed.connect(self.open_results)
        self.similar_button = PushButton(text="Find similar cases")
        self.similar_button.changed.connect(self.find_similar)
        self.concept_tool = ConceptTool()
        self.concept_column = self.concept_tool.concept_column
        self.measures = self.concept_tool.measures
        self.concepts_button = self.concept_tool.button
        self.concepts_button.changed.connect(self.explain_concepts)
        self.form.extend([self.csv, self.out, self.model, self.layer, self.confounders,
                          self.projection, self.workers, self.open_button, self.colour,
                          self.image, self.k, self.similar_button, self.concept_column,
                          self.measures, self.concepts_button])
        self.job = JobPanel("Embed cohort")
        self.job.run_button.clicked.connect(self.run)
        self.note = wrapping(QLabel("Embed a case list, or open the results of an earlier run."))
        self.scatter = LatentScatter()
        self.scatter.on_point = self.open_case
        self.similar = ResultTable("similar cases")
        self.scores = ResultTable("confounder scores")
        self.cases = ResultTable("embedded cases")
        self.concepts = ResultTable("concepts")
        self.views = QTabWidget()
        for widget, title in ((self.scatter, "Latent space"), (self.similar, "Similar"),
                              (self.scores, "Confounders"), (self.concepts, "Concepts"),
                              (self.cases, "Cases")):
            self.views.addTab(widget, title)
        self._layout.addWidget(self.job)
        self._layout.addWidget(self.note)
        self._layout.addWidget(self.views)
        self._out: Path | None = None
        self.latent: Any = None
        self.embeddings: Any = None
        self._sha256: tuple[str, str | None] = ("", None)  # the run's weights and config
        self._highlight: list[int] = []
        self.trusted = TrustedModels()

    def update_info(self) -> None:
        self.info.value = ("" if self.embeddings is None else
                           f"{len(self.embeddings.ids)} cases at layer "
                           f"{self.embeddings.layer!r}, decision of class "
                           f"{self.embeddings.target}")

    def _folder(self) -> Path:
        return output_folder(self.out.value, "the latent space's tables")

    def run(self) -> None:
        """Embed every case of the list in a worker thread, on Dask."""
        from napari_xaimed.cohort import EmbeddingJob, read_cases, run_cohort_steps

        try:
            csv = Path(str(self.csv.value))
            if not str(self.csv.value).strip() or not csv.is_file():
                raise XaimedError("Pick the case list (a CSV with case_id,image and any "
                                  "metadata columns).")
            out = self._folder()
            source = self.model.value.strip() or "bundled"
            job = EmbeddingJob(model=source, trust=self.trusted.trusts(source),
                               layer=self.layer.value.strip() or None,
                               params={"device": "auto"},
                               confounders=[c.strip() for c in self.confounders.value.split(",")
                                            if c.strip()],
                               projection=str(self.projection.value))
            cases = read_cases(csv, job.required, job.optional)
            job.check_cases(cases)  # a missing column is said now, before Dask starts
        except XaimedError as exc:
            report_error(exc)
            return
        steps = run_cohort_steps(job, cases, out, workers=int(self.workers.value))

        def done(result: Any, seconds: float) -> None:
            if result.latent is None:
                raise XaimedError(f"only {len(cases) - result.failed} case(s) could be "
                                  "embedded: a latent space needs 2; see the Cases tab.")
            self.show_results(result.out)
            self.note.setText(f"{len(cases)} cases: {result.ran} run, {result.skipped} "
                              f"already finished, {result.failed} failed ({seconds:.1f} s); "
                              f"tables in {result.out}")

        self.job.start(steps, done, f"Embedding {len(cases)} cases",
                       retry_trusted=self.trusted.retry(self.run))

    def open_results(self, *_: Any) -> None:
        """Show the latent space an earlier run left in the output folder."""
        try:
            self.show_results(self._folder())
        except XaimedError as exc:
            report_error(exc)
            return
        self.note.setText(f"Latent space of {self._out} ({len(self.latent)} cases).")

    def show_results(self, out: Path) -> None:
        """Read the run's tables and embeddings and draw them."""
        from napari_xaimed.cohort import load_embeddings, load_result

        tables = load_result(out)
        if tables["run"].get("kind") != "embedding" or "latent" not in tables:
            raise XaimedError(f"{str(out)!r} holds no latent space (a {tables['run'].get('kind')}"
                              " run, or fewer than 2 cases embedded): embed a case list into "
                              "it first.")
        self.embeddings = load_embeddings(out)
        self.latent = tables["latent"]
        params = tables["run"].get("params", {})
        self._sha256 = (params.get("model_sha256", ""), params.get("model_config_sha256"))
        self._out = Path(out)
        self._highlight = []
        extra = [c for c in self.latent.columns if c not in ("case_id", "predicted")
                 and not c.startswith(("pca_", "umap_"))]
        self.colour.choices = [NO_COLOUR, *extra]
        self.colour.value = NO_COLOUR
        self.scores.set_rows(_records(tables.get("confounders")))
        self.cases.set_rows(_records(tables["cases"]))
        self.similar.set_rows([])
        self.redraw()
        self.update_info()

    def redraw(self, *_: Any) -> None:
        """Draw the scatter coloured by the chosen column."""
        if self.latent is None:
            return
        axes = [c for c in self.latent.columns if c.startswith(("pca_", "umap_"))][:2]
        xy = self.latent[axes].to_numpy(float)
        if xy.shape[1] == 1:
            xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
            axes = [axes[0], ""]
        column = str(self.colour.value or NO_COLOUR)
        key = "predicted" if column == NO_COLOUR else column
        values = self.latent[key].fillna("").to_numpy()
        self.scatter.plot(xy, values, column, (axes[0], axes[1]), self._highlight)

    def open_case(self, index: int) -> None:
        """Open the image of the case at ``index`` of the scatter as a layer."""
        if self._out is None or self.job.running:
            return
        case_id = str(self.latent["case_id"].iloc[index])
        try:
            files = recorded_files(self._out, case_id, ("image",), "image")
        except XaimedError as exc:
            report_error(exc)
            return

        def done(volumes: tuple, seconds: float) -> None:
            (volume,) = volumes
            prov = provenance("cohort case", sources=[str(volume.path)], case_id=case_id,
                              role="image")
            add_or_update(self.viewer, image_layer(volume.data, CASE_LAYER, volume.spacing,
                                                   translate=volume.translate,
                                                   provenance=prov))
            self.note.setText(f"Showing {case_id}.")

        self.job.start(read_case_steps(case_id, files), done, f"Opening {case_id}")

    def find_similar(self, *_: Any) -> None:
        """Embed the chosen image with the run's model and layer; list its nearest cases."""
        from napari_xaimed.attribution import case_embedding, load_model, similar_cases

        try:
            if self.embeddings is None:
                raise XaimedError("Embed a case list or open a result first.")
            layer = self.image.value
            if layer is None:
                raise XaimedError("Pick the image to compare with the cohort (image).")
            k = int(self.k.value)
            if k > len(self.embeddings.ids):
                raise XaimedError(f"k = {k} but the latent space holds "
                                  f"{len(self.embeddings.ids)} cases: pick a smaller k.")
        except XaimedError as exc:
            report_error(exc)
            return
        # a lazy layer stays lazy: case_embedding reads it slab by slab in the worker
        data = layer.data if is_lazy(layer.data) else np.asarray(layer.data)
        embeddings = self.embeddings
        source, expected = self.model.value.strip() or "bundled", self._sha256
        trust = self.trusted.trusts(source)

        def steps():
            yield Progress(0, 2, "loading the model")
            model = load_model(source, trust=trust)
            if (expected[0] and model.sha256 != expected[0]) or (
                    expected[1] and model.config_sha256 != expected[1]):
                raise XaimedError(f"the model {source!r} is not the one this latent space was "
                                  "made with: set the model field to that one.")
            yield Progress(1, 2, f"embedding {layer.name!r}")
            found = case_embedding(model, data, layer=embeddings.layer,
                                   target=embeddings.target, device="auto")
            return similar_cases(embeddings, found.vector, k)

        def done(table: Any, seconds: float) -> None:
            self.similar.set_rows(_records(table))
            self._highlight = [int(i) for i in table["index"]]
            self.redraw()
            self.views.setCurrentWidget(self.similar)
            self.note.setText(f"The {len(table)} cases nearest to {layer.name!r}: "
                              f"{', '.join(table['case_id'])} (ringed in red).")

        self.job.start(steps(), done, f"Cases similar to {layer.name}",
                       retry_trusted=self.trusted.retry(self.find_similar))

    def explain_concepts(self, *_: Any) -> None:
        """TCAV of the concept column and RCVs of the measures over the case list."""
        self.concept_tool.start(self)


def _image_type() -> type:
    from napari.layers import Image

    return Image
