"""Out-of-distribution warnings: the bundled models record what they were trained on, explain or
segment the lesion sample without a word, and warn (naming what differs, recorded in the
provenance) on nilearn's MNI152 brain."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_xaimed import samples
from napari_xaimed.models.domain import (
    PERCENTILES,
    OutOfDistributionWarning,
    check_input,
    training_statistics,
)
from napari_xaimed.models.preprocess import Preprocessing


def out_of_distribution(call):
    """Run ``call`` and return its result and the OutOfDistributionWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [w.message for w in caught if issubclass(w.category,
                                                             OutOfDistributionWarning)]


@pytest.fixture(scope="module")
def brain():
    return samples.mni152(2)  # nilearn's template, in the test extra


def test_the_bundled_configs_record_their_training_inputs_outside_the_hash():
    from napari_xaimed.models.bundled import CLASSIFIER_WEIGHTS, SEGMENTER_WEIGHTS
    from napari_xaimed.models.trust import config_sha256

    for weights, shape, spacing in ((CLASSIFIER_WEIGHTS, [32, 32, 32], [2.0, 2.0, 2.0]),
                                    (SEGMENTER_WEIGHTS, [64, 64, 64], [1.0, 1.0, 1.0])):
        config = json.loads(weights.with_suffix(".json").read_text())
        record = config["training_inputs"]
        assert record["shape"] == shape and record["spacing"] == spacing
        assert record["n_volumes"] == config["training"].get("n_train",
                                                             config["training"].get("n_volumes"))
        # z-scored volumes: pooled mean 0 and standard deviation 1, whatever the sample
        assert record["scaled_intensity"]["mean"] == pytest.approx(0.0, abs=1e-5)
        assert record["scaled_intensity"]["std"] == pytest.approx(1.0, abs=1e-5)
        # a description of the data: outputs recorded before it was added still rerun
        without = {k: v for k, v in config.items() if k != "training_inputs"}
        assert config_sha256(config) == config_sha256(without)


def test_the_statistics_are_numpy_percentiles_of_the_scaled_volumes():
    rng = np.random.default_rng(0)
    volumes = [rng.normal(5.0, 2.0, (8, 8, 8)) for _ in range(3)]
    stats = training_statistics(volumes, (2.0, 1.0, 1.0), {"scaling": "zscore"})
    scaled = np.concatenate([((v - v.mean()) / v.std()).ravel() for v in volumes])
    expected = np.percentile(scaled, PERCENTILES)
    got = [stats["scaled_intensity"]["percentiles"][str(p)] for p in PERCENTILES]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert stats["field_of_view_mm"] == [16.0, 8.0, 8.0]


def test_the_rule_on_known_inputs():
    """z-scored: a linear change of the intensities is no difference to the model; a different
    distribution shape is, and so is a field of view or voxel size off by more than 1.5x."""
    prep = Preprocessing.from_dict({"scaling": "zscore", "input_size": [16, 16, 16]})
    rng = np.random.default_rng(1)
    volumes = [rng.normal(0.0, 1.0, (16, 16, 16)) for _ in range(4)]
    stats = training_statistics(volumes, (2.0, 2.0, 2.0), prep)
    same = rng.normal(0.0, 1.0, (16, 16, 16))
    assert check_input(stats, same * 1000 + 50, (2.0, 2.0, 2.0), prep) == []
    assert check_input(stats, same, (2.8, 2.0, 2.0), prep) == []  # 1.4x: within the rule
    skewed = rng.exponential(1.0, (16, 16, 16))  # percentiles 1..99 of z-scored Exp(1)
    (reason,) = check_input(stats, skewed, (2.0, 2.0, 2.0), prep)
    assert reason.startswith("intensity")
    (reason,) = check_input(stats, same, (4.0, 2.0, 2.0), prep)
    assert reason.startswith("field of view: 64 x 32 x 32 mm, trained on 32 x 32 x 32 mm")
    windowed = Preprocessing.from_dict({"scaling": "zscore"})  # a sliding-window model
    (reason,) = check_input(training_statistics(volumes, (1.0, 1.0, 1.0), windowed),
                            same, (1.0, 1.0, 1.0), windowed, model_spacing=(0.5, 1.0, 1.0))
    assert reason == "voxel size: 0.5 x 1 x 1 mm, trained on 1 x 1 x 1 mm"
    assert check_input(None, skewed, (9.0, 9.0, 9.0), prep) == []  # no record: no check


def test_the_lesion_sample_gives_no_warning():
    from napari_xaimed.attribution import attribute
    from napari_xaimed.segmentation import segment

    lesion = samples.lesion_volume(seed=0)
    result, said = out_of_distribution(lambda: attribute(
        "bundled", lesion.image, "saliency", spacing=lesion.spacing, device="cpu"))
    assert said == [] and "out_of_distribution" not in result.params
    _, said = out_of_distribution(lambda: segment(lesion.image, "model",
                                                  spacing=lesion.spacing, device="cpu"))
    assert said == []


def test_the_mni152_brain_is_warned_about_and_recorded(brain):
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.attribution import attribute
    from napari_xaimed.segmentation import segment_steps

    result, said = out_of_distribution(lambda: attribute(
        "bundled", brain.image, "saliency", spacing=brain.spacing, device="cpu"))
    (warning,) = said
    assert "'bundled' was trained on" in str(warning)
    kinds = [reason.split(":")[0] for reason in warning.reasons]
    assert kinds == ["intensity", "field of view"]
    extent = " x ".join(f"{n * 2.0:.3g}" for n in brain.image.shape)
    assert f"field of view: {extent} mm, trained on 64 x 64 x 64 mm" in str(warning)
    assert result.params["out_of_distribution"] == warning.reasons  # the provenance line

    seg, said = out_of_distribution(lambda: run_steps(segment_steps(
        brain.image, "model", spacing=brain.spacing, device="cpu")))
    (warning,) = said
    assert [r.split(":")[0] for r in warning.reasons] == ["intensity", "voxel size"]
    assert "voxel size: 2 x 2 x 2 mm, trained on 1 x 1 x 1 mm" in str(warning)
    assert seg.facts["out_of_distribution"] == warning.reasons


def test_the_widget_shows_the_warning_and_keeps_it(qtbot, make_napari_viewer):
    from napari.utils.notifications import notification_manager

    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "mni152")
    image = next(layer for layer in viewer.layers
                 if (layer.metadata.get("xaimed") or {}).get("kind") == "sample")
    shown = []
    notification_manager.notification_ready.connect(shown.append)
    try:
        widget = AttributionWidget(viewer)
        widget.image.value = image
        widget.methods.value = ["saliency"]
        widget.device.value = "cpu"
        with qtbot.waitSignal(widget.job.finished, timeout=180000) as blocker:
            widget.job.run_button.click()
        assert blocker.args[0] == "done", widget.job.status.text()
        qtbot.waitUntil(lambda: any("far outside" in str(n.message) for n in shown),
                        timeout=10000)
    finally:
        notification_manager.notification_ready.disconnect(shown.append)
    (notice,) = [n for n in shown if "far outside" in str(n.message)]
    assert str(notice.severity) == "warning" and "intensity" in str(notice.message)
    heatmap = next(layer for layer in viewer.layers if "Saliency" in layer.name)
    assert heatmap.metadata["xaimed"]["params"]["out_of_distribution"][0].startswith(
        "intensity: after the model's zscore scaling")


def test_the_widget_checks_the_field_of_view_of_the_layer(qtbot, make_napari_viewer):
    """The lesion sample (64^3 voxels) explained from the widget with 2 mm voxels: 128 mm
    across where the bundled classifier saw 64 mm (its training record), so the warning
    names the field of view the layer's scale gives."""
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    lesion = samples.lesion_volume(seed=0)
    image = viewer.add_image(lesion.image, name="lesion ct", scale=(2.0, 2.0, 2.0))
    widget = AttributionWidget(viewer)
    widget.image.value = image
    widget.methods.value = ["saliency"]
    widget.device.value = "cpu"
    with qtbot.waitSignal(widget.job.finished, timeout=180000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done", widget.job.status.text()
    heatmap = viewer.layers["Saliency [lesion ct]"]
    reasons = heatmap.metadata["xaimed"]["params"]["out_of_distribution"]
    assert [r.split(":")[0] for r in reasons] == ["field of view"]
    assert reasons[0].startswith("field of view: 128 x 128 x 128 mm, trained on 64 x 64 x 64 mm")
