"""The explanation-check widget: each check fills its table, plot or layers."""

import shutil

import numpy as np
import pytest

from napari_xaimed.attribution import attribute
from napari_xaimed.models.lesion_classifier import WEIGHTS
from napari_xaimed.viewer.widgets.explanations import ExplanationWidget


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


def test_by_structure_tables_each_predicted_structure(qtbot, viewer):
    ct = viewer.layers["lesion ct"]  # scale (2, 1, 1)
    heat = np.zeros(ct.data.shape, np.float32)
    pred = np.zeros(ct.data.shape, np.uint8)
    heat[10:12, 10:12, 10:12], pred[10:12, 10:12, 10:12] = 2.0, 1
    heat[20:22, 30:32, 30:32], pred[20:22, 30:32, 30:32] = 1.0, 1
    viewer.add_image(heat, name="boxes", scale=ct.scale)
    viewer.add_labels(pred, name="prediction", scale=ct.scale)
    widget = ExplanationWidget(viewer)
    widget.check.value = "by structure"
    widget.heatmap.value = viewer.layers["boxes"]
    widget.structures.prediction.value = viewer.layers["prediction"]
    widget.structures.margin.value = 1.0
    assert run_and_wait(qtbot, widget) == "done"
    first, second = widget.table.rows
    voxel_mm3 = float(np.prod(ct.scale))  # (2, 1, 1): z neighbours lie 2 mm away
    assert (first["sum"], first["mean"], first["volume_mm3"]) == (16.0, 2.0, 8 * voxel_mm3)
    assert first["positive_share"] == pytest.approx(16 / 24)
    assert first["around_voxels"] == 16 and second["sum"] == 8.0
    assert len(widget.plot.axes.patches) == 4  # inside and around bars of two structures


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
    # each with its colour bar; only the mean is drawn over the image
    assert {label: (layer.visible, layer.colorbar.visible) for label in ("mean", "std", "reliable")
            for layer in [viewer.layers[f"Ensemble {label} Saliency [lesion ct]"]]} == {
        "mean": (True, True), "std": (False, True), "reliable": (False, True)}
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


def lazy_saliency(viewer):
    """A dask heatmap over the lesion sample (ties: rounded, zero outside a box)."""
    import dask.array as da

    truth = viewer.layers["lesion truth"]
    rng = np.random.default_rng(0)
    heat = np.round(rng.random(truth.data.shape), 2).astype(np.float32)
    heat[:, :, : heat.shape[2] // 2] = 0
    heat[truth.data > 0] += 0.5
    layer = viewer.add_image(da.from_array(heat, chunks=(3, *heat.shape[1:])),
                             name="lazy saliency", scale=truth.scale)
    return layer, heat


def test_a_lazy_heatmap_is_scored_slab_by_slab_against_the_mask(qtbot, viewer):
    from napari_xaimed.attribution import truth_scores

    truth = viewer.layers["lesion truth"]
    layer, heat = lazy_saliency(viewer)
    widget = ExplanationWidget(viewer)
    widget.check.value = "against mask"
    widget.heatmap.value, widget.mask.value = layer, truth
    widget.tolerance.value, widget.top_k.value = 3.0, 0.02
    assert run_and_wait(qtbot, widget) == "done"
    (row,) = widget.table.rows
    want = truth_scores(heat, np.asarray(truth.data) != 0, spacing=tuple(truth.scale),
                        tolerance_mm=3.0, k=0.02)
    for key, value in want.items():
        np.testing.assert_allclose(row[key], value, rtol=1e-12, err_msg=key)


def test_a_lazy_heatmap_is_tabled_by_region_and_refused_with_a_reference(qtbot, viewer,
                                                                         monkeypatch):
    from napari_xaimed.attribution import relevance_by_region

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    truth = viewer.layers["lesion truth"]
    layer, heat = lazy_saliency(viewer)
    atlas = viewer.add_labels(np.where(truth.data > 0, 5, 1).astype(np.uint8), name="atlas",
                              scale=truth.scale)
    widget = ExplanationWidget(viewer)
    widget.check.value = "by region"
    widget.heatmap.value, widget.regions.value = layer, atlas
    assert run_and_wait(qtbot, widget) == "done"
    want = relevance_by_region(heat, atlas.data, spacing=tuple(truth.scale))
    assert [r["label"] for r in widget.table.rows] == list(want["label"])
    np.testing.assert_allclose([r["sum"] for r in widget.table.rows], want["sum"], rtol=1e-12)
    assert widget.details.rows == []
    viewer.add_image(heat, name="reference", scale=truth.scale)
    widget.reference.value = viewer.layers["reference"]
    widget.job.run_button.click()
    assert "'lazy saliency' is read lazily (larger than memory)" in shown[-1]
    assert "Leave the reference map empty" in shown[-1]
    assert not widget.job.running


def test_checks_that_run_the_model_refuse_a_lazy_layer(qtbot, viewer, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    layer, _ = lazy_saliency(viewer)
    names = [lay.name for lay in viewer.layers]
    widget = ExplanationWidget(viewer)
    widget.check.value = "deletion / insertion"
    widget.image.value, widget.heatmap.value = viewer.layers["lesion ct"], layer
    widget.job.run_button.click()
    assert shown[-1].startswith("'lazy saliency' is read lazily (larger than memory): "
                                "deletion and insertion run the model on the whole image")
    assert "viewer.add_image(layer.data[z0:z1].compute())" in shown[-1]
    assert not widget.job.running and widget.job.worker is None
    for check in ("ensemble", "randomisation", "compare methods"):
        widget.check.value = check
        widget.image.value = layer
        widget.dropout_passes.value = 2  # an ensemble of one model: no files needed
        widget.methods.value = ["saliency", "gradcam"]
        widget.job.run_button.click()
        assert "'lazy saliency' is read lazily" in shown[-1], check
        assert not widget.job.running
    assert [lay.name for lay in viewer.layers] == names and widget.table.rows == []
