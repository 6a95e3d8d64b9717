"""The evaluation widget's Cohort tab: a case list on a local Dask cluster, its tables and plot,
a case opened with its error layers, and a cancel that keeps the finished cases."""

import time

import numpy as np
import pytest

from napari_xaimed.cohort.sample import write_sample_cohort
from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import read_volume
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

PARTS = '{"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}'


@pytest.fixture
def widget(make_napari_viewer, qtbot, tmp_path):
    w = EvaluationWidget(make_napari_viewer())
    qtbot.addWidget(w)
    csv = write_sample_cohort(tmp_path / "cases", 4, shape=(32, 48, 48), spacing=(2.0, 1.0, 1.0),
                              seed=11)
    w.parts.value = PARTS
    w.cohort.csv.value = csv
    w.cohort.out.value = tmp_path / "out"
    w.cohort.workers.value = 2
    return w


def run(qtbot, panel, timeout=120000):
    with qtbot.waitSignal(panel.job.finished, timeout=timeout) as blocker:
        panel.job.run_button.click()
    return blocker.args[0]


def test_cohort_tab_runs_shows_and_opens_a_case(qtbot, widget, tmp_path):
    panel = widget.cohort
    assert run(qtbot, panel) == "done", panel.job.status.text()
    assert [r["case_id"] for r in panel.cases.rows] == [f"case00{i}" for i in range(4)]
    folder = tmp_path / "cases"
    ref = read_volume(folder / "case002_ref.nii.gz")
    pred = read_volume(folder / "case002_pred.nii.gz")
    direct = evaluate(ref.data, pred.data, spacing=ref.spacing,
                      parts={"lesion": {"thing": [1, 2], "parts": {"core": [2]}}})["lesion"]
    row = next(r for r in panel.cases.rows if r["case_id"] == "case002")
    assert row["pq"] == pytest.approx(direct.pq) and row["status"] == "ok"
    metrics = {(r["metric"], r["level"]) for r in panel.summary.rows}
    assert {("pq", "case"), ("part_aware_pq", "case"), ("dice", "instance")} <= metrics
    assert len(panel.plot.axes.lines) == 3  # PQ, SQ, RQ per case
    assert "4 run" in panel.note.text()

    # selecting a case opens its volumes at their spacing and evaluates them: error layers
    with qtbot.waitSignal(widget.job.finished, timeout=60000):
        panel.cases.table.selectRow(2)
    viewer = widget.viewer
    layer = viewer.layers["Cohort prediction"]
    np.testing.assert_array_equal(layer.data, pred.data)
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    assert layer.metadata["xaimed"]["case_id"] == "case002"
    assert "Errors lesion [Cohort prediction]" in viewer.layers or \
        "Errors [Cohort prediction]" in viewer.layers
    assert widget.summary.rows[0]["pq"] == pytest.approx(direct.pq)

    # another case replaces the opened layers instead of adding more
    count = len(viewer.layers)
    with qtbot.waitSignal(widget.job.finished, timeout=60000):
        panel.cases.table.selectRow(0)
    assert len(viewer.layers) == count
    assert viewer.layers["Cohort reference"].metadata["xaimed"]["case_id"] == "case000"

    # a rerun skips everything; Open results reads the tables back
    assert run(qtbot, panel) == "done"
    assert "4 already finished" in panel.note.text()
    panel.summary.set_rows([])
    panel.open_results()
    assert panel.summary.rows and len(panel.cases.rows) == 4


def test_cohort_cancel_stops_quickly_and_keeps_finished_cases(qtbot, widget, tmp_path):
    panel = widget.cohort
    csv = write_sample_cohort(tmp_path / "many", 30, shape=(40, 40, 40), seed=3)
    panel.csv.value = csv
    with qtbot.waitSignal(panel.job.finished, timeout=120000) as blocker:
        panel.job.run_button.click()
        qtbot.waitUntil(lambda: panel.job.bar.value() >= 2, timeout=60000)
        started = time.perf_counter()
        panel.job.cancel_button.click()
    assert blocker.args[0] == "cancelled"
    print(f"cohort cancel took {time.perf_counter() - started:.2f} s")
    assert time.perf_counter() - started < 5.0
    kept = len(list((tmp_path / "out" / "cases").glob("*.json")))
    assert kept >= 2
    assert run(qtbot, panel) == "done"
    assert f"{kept} already finished" in panel.note.text()
