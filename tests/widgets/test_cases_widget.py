"""The Cases widget: a case list embedded on a local Dask cluster, the scatter of its latent
space (a click opens that case), the cases most similar to an image, the confounder table."""

import csv

import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent

from napari_xaimed.attribution import embed, load_model, similar_cases
from napari_xaimed.cohort.sample import write_sample_cohort
from napari_xaimed.io import read_volume
from napari_xaimed.viewer.widgets.latent import CASE_LAYER, CasesWidget


@pytest.fixture
def widget(make_napari_viewer, qtbot, tmp_path):
    w = CasesWidget(make_napari_viewer())
    qtbot.addWidget(w)
    listed = write_sample_cohort(tmp_path / "cases", 6, kind="attribution", shape=(32, 32, 32),
                                 spacing=(2.0, 2.0, 2.0), seed=4)
    rows = list(csv.DictReader(open(listed)))
    for i, row in enumerate(rows):
        row.update(age=str(50 + 3 * i), scanner="AB"[i % 2], concept="two" if i < 2 else "")
    with open(listed, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    w.csv.value = listed
    w.out.value = tmp_path / "out"
    w.workers.value = 2
    w.confounders.value = "age, scanner"
    return w


def _click(scatter, index):
    """A left click on point ``index``, through matplotlib's own pick machinery."""
    scatter.canvas.draw()
    x, y = scatter.axes.transData.transform(scatter.points.get_offsets()[index])
    MouseEvent("button_press_event", scatter.canvas, x, y, button=1)._process()


def test_cases_widget_embeds_opens_a_case_and_finds_similar_ones(qtbot, widget, tmp_path):
    with qtbot.waitSignal(widget.job.finished, timeout=180000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done", widget.job.status.text()
    assert len(widget.latent) == 6 and len(widget.scatter.points.get_offsets()) == 6
    assert {r["variable"] for r in widget.scores.rows} == {"age", "scanner=B"}
    assert "age" in widget.colour.choices
    widget.colour.value = "scanner"  # a categorical colouring redraws with a legend
    assert widget.scatter.axes.get_legend() is not None

    # a click on a point opens that case at its spacing
    with qtbot.waitSignal(widget.job.finished, timeout=60000):
        _click(widget.scatter, 3)
    case_id = widget.latent["case_id"].iloc[3]
    layer = widget.viewer.layers[CASE_LAYER]
    volume = read_volume(tmp_path / "cases" / f"{case_id}_image.nii.gz")
    np.testing.assert_array_equal(layer.data, volume.data)
    np.testing.assert_allclose(layer.scale, (2.0, 2.0, 2.0))
    assert layer.metadata["xaimed"]["case_id"] == case_id
    with qtbot.waitSignal(widget.job.finished, timeout=60000):
        _click(widget.scatter, 0)
    assert [ly.name for ly in widget.viewer.layers].count(CASE_LAYER) == 1  # replaced

    # the cases nearest to the opened image: itself first, as similar_cases computes it
    widget.reset_choices()
    widget.image.value = widget.viewer.layers[CASE_LAYER]
    widget.k.value = 3
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.similar_button.native.click()
    assert blocker.args[0] == "done", widget.job.status.text()
    first = widget.latent["case_id"].iloc[0]
    volumes = [read_volume(tmp_path / "cases" / f"{c}_image.nii.gz").data
               for c in widget.latent["case_id"]]
    direct = embed(load_model("bundled"), volumes, ids=list(widget.latent["case_id"]),
                   target=widget.embeddings.target, device="cpu")
    expected = similar_cases(direct, direct.vectors[0], 3)
    assert [r["case_id"] for r in widget.similar.rows] == list(expected["case_id"])
    assert widget.similar.rows[0]["case_id"] == first
    assert widget.similar.rows[0]["distance"] == pytest.approx(0.0, abs=1e-6)

    # Open results reads it all back
    widget.latent = None
    widget.open_results()
    assert len(widget.latent) == 6 and len(widget.scores.rows) == 2


def test_cases_widget_refuses_missing_columns_and_other_runs(qtbot, widget, tmp_path,
                                                            monkeypatch):
    shown = []
    monkeypatch.setattr("napari_xaimed.viewer.widgets.latent.report_error",
                        lambda exc: shown.append(str(exc)))
    widget.confounders.value = "sex"
    widget.run()
    assert "no column(s) ['sex']" in shown[-1] and not widget.job.running
    widget.open_results()  # nothing there yet
    assert "holds no cohort result" in shown[-1]
    widget.find_similar()
    assert "Embed a case list or open a result first" in shown[-1]
    assert len(widget.viewer.layers) == 0


def test_cases_widget_explains_the_case_list_by_concepts(qtbot, widget):
    from napari_xaimed.attribution import concepts_from_cases

    widget.concept_column.value = "concept"
    widget.measures.value = "volume_mm3, age"
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.concepts_button.native.click()
    assert blocker.args[0] == "done", widget.job.status.text()
    rows = widget.concepts.rows
    assert [r["kind"] for r in rows] == ["tcav", "rcv", "rcv"]
    direct = concepts_from_cases("bundled", widget.csv.value, concept_column="concept",
                                 measures=["volume_mm3", "age"], device="cpu")
    expected = direct.to_dataframe()
    assert [r["feature"] for r in rows[1:]] == ["volume_mm3", "age"]
    assert [r["r2"] for r in rows[1:]] == pytest.approx(list(expected["r2"][1:]), abs=1e-6)
    assert rows[0]["tcav_score"] == pytest.approx(expected["tcav_score"][0])
    assert len(widget.viewer.layers) == 0  # a table, no layer
