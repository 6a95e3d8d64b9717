"""``napari-xaimed rerun PROVENANCE.json --check``: every capability's output, written by the
CLI or by the plugin's writer from a widget's layer, is computed again from its provenance bit
for bit; missing, changed or never-saved inputs are refused with a message naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_xaimed import samples
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import array_sha256
from napari_xaimed.cli.main import main
from napari_xaimed.cli.rerun import rerun
from napari_xaimed.io import read_volume, write_volume


def check(sidecar: Path, capsys=None) -> None:
    """``rerun --check`` through the CLI: exit 0 and "identical"."""
    code = main(["rerun", str(sidecar), "--check", "--out", str(sidecar.parent / "again")])
    if capsys is not None:
        out = capsys.readouterr()
        assert "identical" in out.out, out.err
    assert code == 0


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    lesion = samples.lesion_volume(shape=(32, 40, 40), seed=0, n_lesions=2)
    write_volume(folder / "ct.nii.gz", lesion.image, spacing=(2.0, 1.0, 1.0))
    return folder / "ct.nii.gz"


# ------------------------------------------------------------------------ command line

def test_cli_segmentation_reruns(ct, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(ct), "--out", str(out), "--method", "otsu",
                 "--smoothing-mm", "1", "--min-size-mm3", "5"]) == 0
    prov = json.loads((out / "labels.json").read_text())
    assert prov["inputs"]["image"]["path"] == str(ct.resolve())
    assert len(prov["inputs"]["image"]["sha256"]) == 64
    check(out / "labels.json", capsys)
    assert read_volume(out / "again" / "labels.nii.gz").metadata["rerun"]["of"].endswith(
        "labels.json")


@pytest.mark.parametrize("method", ["kmeans"])
def test_cli_tissue_classes_record_mrf_and_rerun(ct, tmp_path, capsys, method):
    out = tmp_path / "seg"
    assert main(["segment", str(ct), "--out", str(out), "--method", method, "--n-classes", "2",
                 "--iterations", "2"]) == 0
    prov = json.loads((out / "labels.json").read_text())
    assert prov["params"]["mrf"] == 0.1  # the weight used, not None
    check(out / "labels.json", capsys)
    check(out / "probability_class2.json", capsys)


def test_cli_registration_reruns(tmp_path, capsys):
    pair = samples.longitudinal_pair(seed=0)
    write_volume(tmp_path / "prior.nii.gz", pair.moving, spacing=pair.spacing)
    write_volume(tmp_path / "current.nii.gz", pair.fixed, spacing=pair.spacing)
    out = tmp_path / "reg"
    assert main(["register", str(tmp_path / "current.nii.gz"), str(tmp_path / "prior.nii.gz"),
                 "--out", str(out), "--transform", "Affine", "--iterations", "10,5",
                 "--seed", "3"]) == 0
    capsys.readouterr()
    for name in ("warped", "displacement"):
        check(out / f"{name}.json", capsys)


def test_rerun_reports_a_difference(ct, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(ct), "--out", str(out), "--method", "otsu"]) == 0
    labels = read_volume(out / "labels.nii.gz")
    tampered = labels.data.copy()
    tampered[0, 0, :3] += 7
    write_volume(out / "labels.nii.gz", tampered, affine=labels.affine, is_label=True)
    capsys.readouterr()
    assert main(["rerun", str(out / "labels.json"), "--check"]) == 1
    said = capsys.readouterr().out
    assert "DIFFERENT" in said and "max |difference| 7 in 3 voxels" in said
    report = rerun(out / "labels.nii.gz", tmp_path / "elsewhere", check=True)
    assert report.identical is False and report.differing_voxels == 3


def test_missing_changed_or_unsaved_inputs_are_clear_errors(ct, tmp_path, capsys):
    image = tmp_path / "in" / "ct.nii.gz"
    image.parent.mkdir()
    image.write_bytes(ct.read_bytes())
    out = tmp_path / "seg"
    assert main(["segment", str(image), "--out", str(out), "--method", "otsu"]) == 0

    volume = read_volume(image)
    write_volume(image, volume.data * 2, affine=volume.affine)  # changed since
    with pytest.raises(XaimedError, match="has changed since the output was computed"):
        rerun(out / "labels.json", check=True)

    image.unlink()  # gone
    capsys.readouterr()
    assert main(["rerun", str(out / "labels.json"), "--check"]) == 2
    err = capsys.readouterr().err
    assert "no file at" in err and "ct.nii.gz" in err and "restore it" in err

    prov = json.loads((out / "labels.json").read_text())  # an in-memory layer, never saved
    prov["inputs"]["image"]["path"] = None
    (out / "labels.json").write_text(json.dumps(prov))
    with pytest.raises(XaimedError, match="save the input layer first"):
        rerun(out / "labels.json")


# ------------------------------------------------------------- widget outputs, saved as NIfTI

def run_widget(qtbot, job) -> None:
    with qtbot.waitSignal(job.finished, timeout=120000) as blocker:
        job.run_button.click()
    assert blocker.args[0] == "done", job.status.text()


def save(layer, folder: Path) -> Path:
    """Save a layer with the plugin's writer, as File > Save would; return its sidecar."""
    from napari_xaimed.cli.main import layer_file_stem
    from napari_xaimed.viewer.writer import write_image, write_labels

    data, meta, kind = layer.as_layer_data_tuple()
    writer = write_labels if kind == "labels" else write_image
    written = writer(str(folder / f"{layer_file_stem(layer.name)}.nii.gz"), data, meta)
    return Path(written[1])


def test_widget_segmentation_of_a_file_reruns(qtbot, make_napari_viewer, ct, tmp_path,
                                               capsys):
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    (source,) = viewer.open(str(ct), plugin="napari-xaimed")
    widget = SegmentationWidget(viewer)
    widget.image.value = source
    widget.method.value = "otsu"
    widget.smoothing.value = 0.5
    run_widget(qtbot, widget.job)
    sidecar = save(viewer.layers["Otsu segmentation [ct]"], tmp_path)
    recorded = json.loads(sidecar.read_text())["inputs"]["image"]
    assert recorded["path"] == str(ct.resolve())
    # hashed in the job's worker thread (PendingInputs), still the digest of the layer's voxels
    assert recorded["sha256"] == array_sha256(source.data)
    check(sidecar, capsys)


def test_pending_inputs_hash_later_and_skip_points(make_napari_viewer):
    from napari_xaimed._core.provenance import PendingInputs

    viewer = make_napari_viewer()
    image = viewer.add_image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), name="img")
    points = viewer.add_points(np.array([[0.0, 1.0, 2.0]]), name="pts")
    pending = PendingInputs(image=image, points=points, mask=None)
    assert pending.records["image"]["sha256"] is None and "mask" not in pending.records
    records = pending.complete()
    assert records["image"]["sha256"] == array_sha256(image.data)
    assert records["points"]["points_world_mm"] == [[0.0, 1.0, 2.0]]


def test_widget_evaluation_maps_rerun(qtbot, make_napari_viewer, tmp_path, capsys):
    from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    widget = EvaluationWidget(viewer)
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    widget.voronoi.value = True
    run_widget(qtbot, widget.job)
    for name in ("Errors [prediction]", "Missed [prediction]", "Voronoi regions [reference]"):
        sidecar = save(viewer.layers[name], tmp_path)  # inputs: the sample, by its seed
        assert json.loads(sidecar.read_text())["inputs"]["reference"]["sample"]
        check(sidecar, capsys)


def test_widget_registration_with_a_mask_and_a_carried_layer_reruns(
        qtbot, make_napari_viewer, tmp_path, capsys):
    from napari_xaimed.viewer.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = RegistrationWidget(viewer)
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.fixed_mask.value = viewer.layers["current organs"]
    widget.transform.value = "Affine"
    widget.iterations.value = "10, 5"
    run_widget(qtbot, widget.job)
    prov = viewer.layers["Warped [prior->current]"].metadata["xaimed"]
    assert set(prov["inputs"]) == {"fixed", "moving", "fixed_mask"}
    widget.carry_layer.value = viewer.layers["prior organs"]
    run_widget(qtbot, widget.carry_job)
    carried = viewer.layers["prior organs [prior->current]"]
    assert carried.metadata["xaimed"]["registration"]["inputs"]["fixed_mask"]["sample"]
    for layer in (viewer.layers["Jacobian [prior->current]"], carried):
        check(save(layer, tmp_path), capsys)


def test_widget_attribution_reruns(qtbot, make_napari_viewer, ct, tmp_path, capsys):
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    (source,) = viewer.open(str(ct), plugin="napari-xaimed")
    widget = AttributionWidget(viewer)
    widget.image.value = source
    widget.methods.value = ["integrated_gradients"]
    widget.steps.value = 4
    widget.device.value = "cpu"
    run_widget(qtbot, widget.job)
    check(save(viewer.layers["Integrated Gradients [ct]"], tmp_path), capsys)


def test_attribution_region_is_recorded_and_reruns(qtbot, make_napari_viewer, tmp_path,
                                                   capsys):
    """A segmentation model explained inside a region drawn as a Labels layer: the region is
    an input of the provenance, so the rerun explains the same region."""
    import torch

    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    model = torch.jit.script(net)
    model.save(str(tmp_path / "seg.pt"))
    volume = samples.lesion_volume(shape=(24, 24, 24), seed=1, n_lesions=1)
    write_volume(tmp_path / "img.nii.gz", volume.image)
    region = np.zeros(volume.image.shape, np.uint8)
    region[8:16, 8:16, 8:16] = 1
    write_volume(tmp_path / "region_mask.nii.gz", region, is_label=True)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tmp_path / "img.nii.gz"), plugin="napari-xaimed")
    (labels,) = viewer.open(str(tmp_path / "region_mask.nii.gz"), plugin="napari-xaimed")
    widget = AttributionWidget(viewer)
    widget.image.value = image
    widget.model_source.value = "file"
    widget.model_file.value = tmp_path / "seg.pt"
    widget.target.value = "1"
    widget.region.value = labels
    widget.methods.value = ["saliency"]
    widget.device.value = "cpu"
    run_widget(qtbot, widget.job)
    layer = next(layer for layer in viewer.layers if "Saliency" in layer.name)
    prov = layer.metadata["xaimed"]
    assert prov["params"]["region"] == "given mask"
    assert prov["inputs"]["region"]["path"].endswith("region_mask.nii.gz")
    check(save(layer, tmp_path / "out"), capsys)


def test_widget_longitudinal_change_reruns(qtbot, make_napari_viewer, tmp_path, capsys):
    from napari_xaimed.viewer.widgets.longitudinal import LongitudinalWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = LongitudinalWidget(viewer)
    widget.alignment.value = "SyN"
    widget.iterations.value = "20, 10, 0"
    widget.device.value = "cpu"
    run_widget(qtbot, widget.job)
    change = viewer.layers["Grad-CAM change [prior->current]"]
    prov = change.metadata["xaimed"]
    assert set(prov["inputs"]) == {"prior", "current"}
    assert prov["params"]["registration"]["source"] == "registered here"
    for layer in (change, viewer.layers["Feature change [prior->current]"]):
        check(save(layer, tmp_path), capsys)


def test_a_trusted_rerun_of_an_edited_config_runs_none_of_its_code(tmp_path):
    """A record of a trusted load, rerun with trust after the config was edited to run other
    code: refused as changed before the network is built, so that code never runs."""
    import torch
    from monai.networks.nets import UNet

    from napari_xaimed.attribution import load_model
    from napari_xaimed.models.recorded import recorded_model

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
            "strides": [2], "num_res_units": 0}
    weights = tmp_path / "unet.pt"
    torch.save(UNet(**args).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "monai.networks.nets.unet:UNet", "args": args}))
    record = load_model(weights, trust=True).provenance()
    assert recorded_model(record, trust=True).trusted
    marker = tmp_path / "ran"
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "subprocess:run", "args": {"args": ["touch", str(marker)]}}))
    with pytest.raises(XaimedError, match="has changed since the output was computed"):
        recorded_model(record, trust=True)
    assert not marker.exists()


def test_widget_longitudinal_identity_with_a_noise_seed_reruns(qtbot, make_napari_viewer,
                                                               tmp_path, capsys):
    """Identity alignment and SmoothGrad with a seed other than 0: the rerun draws the same
    noise (the seed was dropped there, and the map came out different)."""
    from napari_xaimed.viewer.widgets.longitudinal import IDENTITY, LongitudinalWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = LongitudinalWidget(viewer)
    widget.alignment.value = IDENTITY
    widget.method.value = "smoothgrad"
    widget.seed.value = 7
    widget.device.value = "cpu"
    run_widget(qtbot, widget.job)
    change = next(layer for layer in viewer.layers
                  if layer.name.endswith("change [prior->current]") and "xaimed" in layer.metadata
                  and layer.metadata["xaimed"].get("output", "change") == "change")
    assert change.metadata["xaimed"]["params"]["method_params"]["seed"] == 7
    check(save(change, tmp_path), capsys)
