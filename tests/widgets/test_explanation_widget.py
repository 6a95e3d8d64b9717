"""The explanation-check widget: each check fills its table, plot or layers."""

import shutil

import numpy as np
import pytest

from napari_xaimed._widgets.explanations import ExplanationWidget
from napari_xaimed.attribution import attribute
from napari_xaimed.attribution.lesion_model import WEIGHTS


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    viewer.layers["lesion ct"].scale = (2.0, 1.0, 1.0)
    return viewer


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_a_perfect_heatmap_scores_one_against_the_mask(qtbot, viewer):
    truth = viewer.layers["lesion truth"]
    viewer.add_image((truth.data > 0).astype(np.float32), name="perfect", scale=truth.scale)
    widget = ExplanationWidget(viewer)
    widget.check.value = "against mask"
    widget.heatmap.value = viewer.layers["perfect"]
    widget.mask.value = truth
    widget.top_k.value = 0.0005
    assert run_and_wait(qtbot, widget) == "done"
    (row,) = widget.table.rows
    for key in ("relevance_mass_accuracy", "relevance_rank_accuracy", "auroc",
                "pointing_game", "top_k_precision"):
        assert row[key] == pytest.approx(1.0), key


def test_by_region_tables_the_heatmap_per_atlas_region(qtbot, viewer):
    truth = viewer.layers["lesion truth"]
    ct = viewer.layers["lesion ct"]
    heat = (truth.data > 0).astype(np.float32)
    viewer.add_image(heat, name="perfect", scale=truth.scale)
    viewer.add_image(heat + 0.1 * ct.data, name="reference", scale=truth.scale)
    atlas = np.where(truth.data > 0, 5, 1).astype(np.uint8)  # lesion region 5, the rest 1
    labels = viewer.add_labels(atlas, name="atlas", scale=truth.scale)
    labels.features = {"label": [1, 5], "name": ["rest", "lesion"]}
    widget = ExplanationWidget(viewer)
    widget.check.value = "by region"
    widget.heatmap.value, widget.regions.value = viewer.layers["perfect"], labels
    widget.reference.value = viewer.layers["reference"]
    assert run_and_wait(qtbot, widget) == "done"
    first, second = widget.table.rows
    assert (first["name"], first["rank"], first["positive_share"]) == ("lesion", 1, 1.0)
    assert second["name"] == "rest" and second["sum"] == 0
    voxel_mm3 = float(np.prod(truth.scale))
    assert first["volume_mm3"] == pytest.approx(voxel_mm3 * np.count_nonzero(truth.data))
    (agreement,) = widget.details.rows
    assert agreement["pearson"] > 0.9 and agreement["auroc_top5%"] > 0.5
    assert agreement["region_pearson"] is None  # two regions: too few to correlate


def test_deletion_and_insertion_curves_are_plotted(qtbot, viewer):
    ct = viewer.layers["lesion ct"]
    saliency = attribute("bundled", ct.data, "saliency", target=1).map
    viewer.add_image(saliency, name="saliency", scale=ct.scale)
    widget = ExplanationWidget(viewer)
    widget.check.value = "deletion / insertion"
    widget.image.value, widget.heatmap.value = ct, viewer.layers["saliency"]
    widget.target.value, widget.steps.value = "1", 5
    assert run_and_wait(qtbot, widget) == "done"
    (row,) = widget.table.rows
    assert 0 <= row["deletion area"] < row["insertion area"] <= 1
    assert len(widget.plot.axes.lines) == 2


def test_ensemble_of_two_files_adds_mean_spread_and_reliable_layers(qtbot, viewer, tmp_path):
    paths = []
    for name in ("a", "b"):
        shutil.copy(WEIGHTS, tmp_path / f"{name}.pt")
        shutil.copy(WEIGHTS.with_suffix(".json"), tmp_path / f"{name}.json")
        paths.append(tmp_path / f"{name}.pt")
    widget = ExplanationWidget(viewer)
    widget.check.value = "ensemble"
    widget.image.value = viewer.layers["lesion ct"]
    widget.members.value = paths
    widget.method.value = "saliency"
    assert run_and_wait(qtbot, widget) == "done"
    for label in ("mean", "std", "reliable"):
        layer = viewer.layers[f"Ensemble {label} Saliency [lesion ct]"]
        assert layer.data.shape == viewer.layers["lesion ct"].data.shape
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    assert float(viewer.layers["Ensemble std Saliency [lesion ct]"].data.max()) == 0
    assert widget.table.rows[0]["mean spearman"] == pytest.approx(1.0)  # identical members
    n_layers = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers  # replaced, not piled up


def test_randomisation_and_compare(qtbot, viewer):
    widget = ExplanationWidget(viewer)
    widget.check.value = "randomisation"
    widget.image.value = viewer.layers["lesion ct"]
    widget.method.value = "gradcam"
    widget.target.value = "1"
    assert run_and_wait(qtbot, widget) == "done"
    assert [r["randomised down to"] for r in widget.table.rows] == [
        "head", "features.6", "features.3", "features.0"]
    widget.check.value = "compare methods"
    widget.methods.value = ["saliency", "gradcam"]
    widget.mask.value = viewer.layers["lesion truth"]
    assert run_and_wait(qtbot, widget) == "done"
    assert {r["method"] for r in widget.table.rows} == {"saliency", "gradcam"}
    assert len(widget.details.rows) > 10  # one row per setting


def test_missing_inputs_are_notifications(qtbot, viewer, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget = ExplanationWidget(viewer)
    widget.check.value = "ensemble"
    widget.job.run_button.click()
    assert "two or more model files" in shown[-1]
    widget.check.value = "compare methods"
    widget.methods.value = ["saliency"]
    widget.job.run_button.click()
    assert "at least two methods" in shown[-1]
    assert not widget.job.running
