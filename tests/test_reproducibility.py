"""Seeded runs give bit-identical outputs twice in a row, and an output's provenance
(``metadata["xaimed"]``) holds every parameter and input needed to compute it again, bit for
bit: the provenance tests recompute through ``napari_xaimed.cli.rerun.recompute``, the code behind
``napari-xaimed rerun``."""

from __future__ import annotations

import json
import shutil
from typing import Any

import numpy as np
import pytest
import torch
from _nets import DropNet

from napari_xaimed import samples
from napari_xaimed.attribution import attribute, ensemble_attribute
from napari_xaimed.cli.rerun import accepted, recompute
from napari_xaimed.evaluation import autc, evaluate
from napari_xaimed.models.lesion_classifier import WEIGHTS
from napari_xaimed.registration import register
from napari_xaimed.registration.in_memory import register_in_memory_steps
from napari_xaimed.registration.params import TUNABLE
from napari_xaimed.segmentation import segment_steps
from napari_xaimed.segmentation.run import run_steps


@pytest.fixture(scope="module")
def lesion():
    return samples.lesion_volume(seed=0)


@pytest.fixture(scope="module")
def pair():
    return samples.longitudinal_pair(seed=0)


@pytest.fixture(scope="module")
def panoptic():
    return samples.panoptic_pair(seed=0)


def segmentation(volume, method, spacing, **params):
    return run_steps(segment_steps(volume, method, spacing=spacing, **params))


# ---------------------------------------------------------------- twice in a row, bit for bit

@pytest.mark.parametrize("method, params", [
    ("otsu", {"smoothing_mm": 1.0}),
    ("atropos", {"n_classes": 3, "iterations": 3, "reproducible": True}),
    ("model", {"device": "cpu", "roi_size": 32, "overlap": 0.5}),
])
def test_segmentation_twice(lesion, method, params):
    volume = lesion.image[::2] if method == "atropos" else lesion.image  # ANTs: keep it short
    first = segmentation(volume, method, lesion.spacing, **params)
    again = segmentation(volume, method, lesion.spacing, **params)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert first.labels.max() > 0  # a real segmentation, not two empty ones
    if first.probabilities is not None:
        np.testing.assert_array_equal(again.probabilities, first.probabilities)


def test_evaluation_and_autc_twice(panoptic):
    kwargs = dict(spacing=panoptic.spacing, instance_input=True, voronoi=True, keep_maps=True)
    first = evaluate(panoptic.reference, panoptic.prediction, **kwargs)
    again = evaluate(panoptic.reference, panoptic.prediction, **kwargs)
    for name, c in first.classes.items():
        np.testing.assert_array_equal(again.classes[name].error_map, c.error_map)
        np.testing.assert_array_equal(again.classes[name].region_map, c.region_map)
        np.testing.assert_equal(again.classes[name].summary(), c.summary())  # NaN == NaN here
        np.testing.assert_equal(again.classes[name].regions, c.regions)
        assert c.regions
    curves = [autc(panoptic.reference, panoptic.prediction, instance_input=True)
              for _ in range(2)]
    assert curves[1].area == curves[0].area
    for name, per_metric in curves[0].curves.items():
        for metric, values in per_metric.items():
            np.testing.assert_array_equal(curves[1].curves[name][metric], values)


@pytest.mark.parametrize("transform, params", [
    ("Affine", {}),  # Mattes mutual information samples voxels at random: the seed matters
    ("SyN", {"iterations": (10, 5, 0)}),
])
def test_registration_twice(pair, transform, params):
    kwargs = dict(fixed_spacing=pair.spacing, moving_spacing=pair.spacing,
                  transform=transform, seed=7, **params)
    first = register(pair.fixed, pair.moving, **kwargs)
    again = register(pair.fixed, pair.moving, **kwargs)
    assert first.params["threads"] == 1  # a seed pins ANTs to one thread: sums in one order
    np.testing.assert_array_equal(again.displacement, first.displacement)
    np.testing.assert_array_equal(again.warped, first.warped)
    assert np.abs(first.displacement).max() > 0


@pytest.mark.parametrize("method, params", [
    ("saliency", {}),
    ("integrated_gradients", {"steps": 16}),
    ("smoothgrad", {"samples": 8}),
    ("gradient_shap", {"samples": 8}),
    ("occlusion", {"window": 8, "stride": 8}),
    ("gradcam", {}),
])
def test_attribution_twice(lesion, method, params):
    first = attribute("bundled", lesion.image, method, device="cpu", seed=3, **params)
    again = attribute("bundled", lesion.image, method, device="cpu", seed=3, **params)
    np.testing.assert_array_equal(again.map, first.map)
    assert np.abs(first.map).max() > 0


def test_noise_methods_follow_their_seed(lesion):
    """The seed is what makes SmoothGrad repeat: another seed draws other noise."""
    one = attribute("bundled", lesion.image, "smoothgrad", device="cpu", seed=3, samples=4)
    other = attribute("bundled", lesion.image, "smoothgrad", device="cpu", seed=4, samples=4)
    assert not np.array_equal(one.map, other.map)


def test_ensembles_twice(lesion, tmp_path):
    members = []
    for name in ("a", "b"):
        shutil.copy(WEIGHTS, tmp_path / f"{name}.pt")
        shutil.copy(WEIGHTS.with_suffix(".json"), tmp_path / f"{name}.json")
        members.append(str(tmp_path / f"{name}.pt"))
    runs = [ensemble_attribute(members, lesion.image, "smoothgrad", samples=4, device="cpu")
            for _ in range(2)]
    np.testing.assert_array_equal(runs[1].mean, runs[0].mean)
    np.testing.assert_array_equal(runs[1].std, runs[0].std)

    torch.manual_seed(0)
    model = DropNet(classes=2).eval()
    volume = lesion.image[::2, ::2, ::2]
    runs = [ensemble_attribute(model, volume, "saliency", dropout_passes=3, target=1,
                               device="cpu") for _ in range(2)]
    assert float(runs[0].std.max()) > 0  # the dropout masks differ between passes...
    np.testing.assert_array_equal(runs[1].mean, runs[0].mean)  # ...the same ones each run
    np.testing.assert_array_equal(runs[1].std, runs[0].std)


# ------------------------------------------------ computed again from the provenance alone

def run_widget(qtbot, widget) -> None:
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done", widget.job.status.text()


@pytest.mark.parametrize("method", ["otsu", "model"])
def test_segmentation_provenance_reruns_it(qtbot, make_napari_viewer, method):
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    source = viewer.layers["lesion ct"]
    source.scale = (2.0, 1.0, 1.0)
    widget = SegmentationWidget(viewer)
    widget.image.value = source
    widget.method.value = method
    widget.smoothing.value = 0.5
    widget.device.value = "cpu"
    run_widget(qtbot, widget)
    out = viewer.layers[f"{'Otsu' if method == 'otsu' else 'Model'} segmentation [lesion ct]"]
    prov = out.metadata["xaimed"]
    assert prov["sources"] == ["lesion ct"]
    params = dict(prov["params"])
    method_used = params.pop("method")
    assert method_used == method and params["smoothing_mm"] == 0.5
    assert {"classes"} <= set(params) if method == "otsu" else {
        "model", "roi_size", "overlap", "blend", "sw_batch_size", "output", "device"} <= set(params)
    assert prov["inputs"]["image"]["spacing"] == [2.0, 1.0, 1.0]  # the scale it ran at
    np.testing.assert_array_equal(out.data, recompute(prov))  # the sample, from its seed


def test_evaluation_provenance_reruns_the_error_map(qtbot, make_napari_viewer):
    from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    widget = EvaluationWidget(viewer)
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    widget.threshold.value = 0.3
    widget.voronoi.value = True
    run_widget(qtbot, widget)
    errors = viewer.layers["Errors [prediction]"]
    prov = errors.metadata["xaimed"]
    np.testing.assert_array_equal(errors.data, recompute(prov))
    regions = viewer.layers["Voronoi regions [reference]"]
    np.testing.assert_array_equal(regions.data, recompute(regions.metadata["xaimed"]))
    missed = viewer.layers["Missed [prediction]"]
    np.testing.assert_array_equal(missed.data, recompute(missed.metadata["xaimed"]))
    reference, prediction = (viewer.layers[name] for name in prov["sources"])
    (c,) = evaluate(reference.data, prediction.data, spacing=tuple(reference.scale),
                    **prov["params"]).classes.values()
    assert prov["summary"] == [c.summary()]


def test_registration_provenance_reruns_it(qtbot, make_napari_viewer):
    from napari_xaimed.viewer.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = RegistrationWidget(viewer)
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.transform.value = "Affine"
    widget.iterations.value = "40, 20"
    run_widget(qtbot, widget)
    warped = viewer.layers["Warped [prior->current]"]
    prov = warped.metadata["xaimed"]
    params = accepted(register_in_memory_steps, prov["params"], TUNABLE)
    assert params["seed"] is not None and "iterations" in params
    np.testing.assert_array_equal(warped.data, recompute(prov))


def test_attribution_provenance_reruns_it(qtbot, make_napari_viewer):
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.methods.value = ["integrated_gradients", "smoothgrad", "occlusion"]
    widget.steps.value = 8
    widget.samples.value = 4
    widget.device.value = "cpu"
    run_widget(qtbot, widget)
    heatmaps = [layer for layer in viewer.layers
                if layer.metadata.get("xaimed", {}).get("kind") == "attribution"]
    assert len(heatmaps) == 3
    for layer in heatmaps:
        prov = layer.metadata["xaimed"]
        np.testing.assert_array_equal(layer.data, recompute(prov),
                                      err_msg=prov["params"]["method"])


def cli_provenance(nifti) -> dict[str, Any]:
    sidecar = nifti.with_name(nifti.name.removesuffix(".nii.gz") + ".json")
    return json.loads(sidecar.read_text())


@pytest.mark.parametrize("argv", [["--method", "otsu", "--smoothing-mm", "1"],
                                  ["--method", "model", "--device", "cpu"]])
def test_cli_segmentation_provenance_reruns_it(lesion, tmp_path, argv):
    from napari_xaimed.cli.main import main
    from napari_xaimed.io import read_volume, write_volume

    write_volume(tmp_path / "ct.nii.gz", lesion.image, spacing=lesion.spacing)
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out"),
                 *argv]) == 0
    written = tmp_path / "out" / "labels.nii.gz"
    prov = cli_provenance(written)
    params = dict(prov["params"])
    method = params.pop("method")
    assert "classes" in params if method == "otsu" else "overlap" in params  # defaults too
    assert prov["inputs"]["image"]["path"] == str((tmp_path / "ct.nii.gz").resolve())
    np.testing.assert_array_equal(read_volume(written).data, recompute(prov))


def test_cli_registration_provenance_reruns_it(pair, tmp_path):
    from napari_xaimed.cli.main import main
    from napari_xaimed.io import read_volume, write_volume

    write_volume(tmp_path / "prior.nii.gz", pair.moving, spacing=pair.spacing)
    write_volume(tmp_path / "current.nii.gz", pair.fixed, spacing=pair.spacing)
    assert main(["register", str(tmp_path / "current.nii.gz"), str(tmp_path / "prior.nii.gz"),
                 "--out", str(tmp_path / "out"), "--transform", "Affine",
                 "--iterations", "40,20", "--seed", "4"]) == 0
    written = tmp_path / "out" / "warped.nii.gz"
    prov = cli_provenance(written)
    np.testing.assert_array_equal(read_volume(written).data,
                                  recompute(prov, name="warped"))
