"""The Cohort tab of the evaluation widget: a case list evaluated on Dask, its summary, a per-case
plot, and any case opened in the viewer with its error layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, FileEdit, LineEdit, PushButton, SpinBox
from qtpy.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import provenance
from napari_xaimed.viewer.layers import add_or_update, labels_layer
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._results import CurvePlot, ResultTable, wrapping

CASE_COLUMNS = ["case_id", "status", "class", "pq", "sq", "rq", "tp", "fp", "fn",
                "part_aware_pq", "mean_dice", "mean_hd95", "seconds", "error"]
LAYER_NAMES = {"reference": "Cohort reference", "prediction": "Cohort prediction"}


def _records(frame: Any) -> list[dict[str, Any]]:
    """DataFrame rows as dicts, NaN kept as float NaN and empty text as ''."""
    if frame is None or len(frame) == 0:
        return []
    return [{k: ("" if v is None else v) for k, v in row.items()}
            for row in frame.astype(object).where(frame.notna(), None).to_dict("records")]


def output_folder(value: Any, what: str) -> Path:
    """The output folder a form's field names, or a :class:`XaimedError` asking for one (an
    empty field reads as ``"."``, the working folder); ``what`` says whose tables it holds."""
    out = Path(str(value))
    if not str(value).strip() or out in (Path("."), Path("")):
        raise XaimedError(f"Pick an output folder for {what}.")
    return out


def recorded_files(out: Path, case_id: str, roles: tuple[str, ...], what: str
                   ) -> dict[str, str]:
    """The files a cohort run in ``out`` recorded for ``case_id`` in each of ``roles``, or a
    :class:`XaimedError` naming ``what`` is missing."""
    from napari_xaimed.cohort.store import CohortStore
    from napari_xaimed.io.cases import Case

    files = (CohortStore(out).record(Case(case_id)) or {}).get("files", {})
    if not all(files.get(role) for role in roles):
        raise XaimedError(f"No {what} recorded for case {case_id!r}.")
    return {role: files[role] for role in roles}


def read_case_steps(case_id: str, files: dict[str, str]) -> Any:
    """Steps (for a :class:`JobPanel`) that read each of a case's ``files`` in turn; they
    return the volumes in the order of ``files``."""
    from napari_xaimed.io import read_volume

    volumes = []
    for i, (role, path) in enumerate(files.items()):
        yield Progress(i, len(files), f"{case_id}: reading the {role}")
        volumes.append(read_volume(path))
    return tuple(volumes)


class CohortPanel(QWidget):
    """Run the evaluation widget's settings over a case list (CSV) on a Dask cluster.

    Parameters
    ----------
    owner : EvaluationWidget
        Gives the viewer and the shared settings (``owner.params()``), and evaluates a case
        opened from the table.
    """

    def __init__(self, owner: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.owner = owner
        self.csv = FileEdit(label="case list (CSV)", mode="r", filter="*.csv",
                            tooltip="case_id,reference,prediction; relative paths from the "
                            "CSV's folder")
        self.out = FileEdit(label="output folder", mode="d",
                            tooltip="Tables, summary and per-case records; running again into "
                            "it skips the cases already finished")
        self.scheduler = LineEdit(label="scheduler", value="",
                                  tooltip="Address of a running Dask scheduler, e.g. "
                                  "tcp://10.0.0.5:8786; empty: a local cluster")
        self.workers = SpinBox(label="local workers", value=os.cpu_count() or 1, min=1,
                               max=256)
        self.open_button = PushButton(text="Open results")
        self.open_button.changed.connect(self.open_results)
        self.form = Container(labels=True, widgets=[self.csv, self.out, self.scheduler,
                                                    self.workers, self.open_button])
        self.job = JobPanel("Run cohort")
        self.job.run_button.clicked.connect(self.run)
        self.note = wrapping(QLabel("Uses the matching settings above. Select a case to open it."))
        self.summary = ResultTable("cohort summary")
        self.cases = ResultTable("cohort cases")
        self.cases.on_select(self.open_case)
        self.plot = CurvePlot("case (table order)", "quality")
        self.views = QTabWidget()
        for widget, title in ((self.summary, "Summary"), (self.cases, "Cases"),
                              (self.plot, "Per case")):
            self.views.addTab(widget, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.job)
        layout.addWidget(self.note)
        layout.addWidget(self.views)
        self._out: Path | None = None
        self._opening = False

    def run(self) -> None:
        """Evaluate every case of the list in a worker thread, on Dask."""
        from napari_xaimed.cohort import EvaluationJob, read_cases, run_cohort_steps

        try:
            csv = Path(str(self.csv.value))
            if not str(self.csv.value).strip() or not csv.is_file():
                raise XaimedError("Pick the case list (a CSV with case_id,reference,prediction).")
            out = output_folder(self.out.value, "the cohort's tables")
            job = EvaluationJob(self.owner.params())
            cases = read_cases(csv, job.required, job.optional)
        except XaimedError as exc:
            report_error(exc)
            return
        address = self.scheduler.value.strip() or None
        steps = run_cohort_steps(job, cases, out, scheduler=address,
                                 workers=int(self.workers.value))

        def done(result: Any, seconds: float) -> None:
            self._out = result.out
            self.show(result.cases, result.summary)
            self.note.setText(f"{len(cases)} cases: {result.ran} run, {result.skipped} already "
                              f"finished, {result.failed} failed ({seconds:.1f} s); tables in "
                              f"{result.out}")

        self.job.start(steps, done, f"Cohort of {len(cases)} cases")

    def open_results(self, *_: Any) -> None:
        """Show the tables an earlier run left in the output folder."""
        from napari_xaimed.cohort import load_result

        try:
            out = output_folder(self.out.value, "the cohort's tables")
            tables = load_result(out)
        except XaimedError as exc:
            report_error(exc)
            return
        self._out = out
        self.show(tables["cases"], tables["summary"])
        self.note.setText(f"Results of {self._out} ({len(tables['cases'])} rows).")

    def show(self, cases: Any, summary: Any) -> None:
        """Fill the summary and case tables and the per-case plot."""
        self.summary.set_rows(_records(summary))
        rows = _records(cases)
        self.cases.set_rows(rows, [c for c in CASE_COLUMNS if c in cases.columns])
        if not len(cases):
            return
        first = cases["class"].dropna().iloc[0] if cases["class"].notna().any() else None
        per_case = cases[(cases["class"] == first) | (cases["status"] != "ok")]
        per_case = per_case.drop_duplicates("case_id")
        curves = {m.upper(): per_case[m].tolist() for m in ("pq", "sq", "rq")
                  if m in per_case.columns}
        failed = int((per_case["status"] != "ok").sum())
        self.plot.plot(list(range(len(per_case))), curves,
                       f"class {first}" + (f"; {failed} failed (gaps)" if failed else ""))

    def open_case(self, row: dict[str, Any]) -> None:
        """Open the selected case's reference and prediction and evaluate it (error layers)."""
        if self._out is None or self.job.running or self.owner.job.running:
            return
        case_id = str(row.get("case_id", ""))
        try:
            files = recorded_files(self._out, case_id, ("reference", "prediction"),
                                   "input files")
        except XaimedError as exc:
            report_error(exc)
            return

        def done(volumes: tuple, seconds: float) -> None:
            viewer = self.owner.viewer
            layers = {}
            for what, volume in zip(("reference", "prediction"), volumes, strict=True):
                prov = provenance("cohort case", sources=[str(volume.path)],
                                  case_id=case_id, role=what)
                layers[what] = add_or_update(viewer, labels_layer(
                    volume.data, LAYER_NAMES[what], volume.spacing, provenance=prov))
            self.owner.reset_choices()
            self.owner.reference.value = layers["reference"]
            self.owner.prediction.value = layers["prediction"]
            self.note.setText(f"Showing {case_id}; its errors are evaluated with the settings "
                              "above.")
            self.owner.run()

        try:
            self.job.start(read_case_steps(case_id, files), done, f"Opening {case_id}")
        except Exception as exc:  # pragma: no cover - a worker that cannot start
            report_error(exc)
