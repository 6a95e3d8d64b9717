"""The Cases widget's concept explanations: TCAV of a case-list column and regression concept
vectors of radiomics measures or metadata, over the same case list as the latent space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import LineEdit, PushButton

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed.viewer.widgets._job import report_error
from napari_xaimed.viewer.widgets.cohort import _records


class ConceptTool:
    """The concept column, the measures and the button; :meth:`start` runs the job in the
    Cases widget's panel and fills its Concepts tab."""

    def __init__(self) -> None:
        self.concept_column = LineEdit(label="concept column", value="",
                                       tooltip="A case-list column naming each case's concept; "
                                       "cases with an empty cell are the random pool (TCAV)")
        self.measures = LineEdit(label="measures", value="volume_mm3,sphericity,mean",
                                 tooltip="Radiomics features of each case's mask and/or numeric "
                                 "metadata columns, comma-separated (regression concept "
                                 "vectors)")
        self.button = PushButton(text="Explain by concepts")

    def start(self, widget: Any) -> None:
        """TCAV of the concept column and RCVs of the measures over ``widget``'s case list."""
        from napari_xaimed.attribution import concepts_from_cases

        column = self.concept_column.value.strip() or None
        measures = [m.strip() for m in self.measures.value.split(",") if m.strip()]
        try:
            csv = Path(str(widget.csv.value))
            if not str(widget.csv.value).strip() or not csv.is_file():
                raise XaimedError("Pick the case list (a CSV with case_id,image, a mask "
                                  "column for radiomics measures, and metadata columns).")
            if not column and not measures:
                raise XaimedError("Name a concept column (TCAV) or measures (regression "
                                  "concept vectors), or both.")
        except XaimedError as exc:
            report_error(exc)
            return
        source, layer = widget.model.value.strip() or "bundled", widget.layer.value.strip()
        trust = widget.trusted.trusts(source)

        def steps():
            from napari_xaimed.attribution import load_model

            yield Progress(0, 2, "loading the model")
            model = load_model(source, trust=trust)
            yield Progress(1, 2, "reading the cases and fitting the concept vectors")
            return concepts_from_cases(model, csv, concept_column=column,
                                       measures=measures or None, layer=layer or None,
                                       device="auto")

        def done(result: Any, seconds: float) -> None:
            widget.concepts.set_rows(_records(result.to_dataframe()))
            widget.views.setCurrentWidget(widget.concepts)
            widget.note.setText(f"Concepts of {csv.name} ({len(result.features)} cases, "
                                f"{seconds:.1f} s).")

        widget.job.start(steps(), done, f"Concepts of {csv.name}",
                         retry_trusted=widget.trusted.retry(widget.explain_concepts))
