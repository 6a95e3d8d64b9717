"""Save an output as a script: the script written from a layer's (or a file's) provenance runs
in a fresh Python process and writes the same voxels as the layer; kinds that cannot be
computed from their provenance are refused with the reason."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_xaimed
from napari_xaimed import samples
from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cli.main import main
from napari_xaimed.cli.script import script_text
from napari_xaimed.io import read_volume, write_volume


def run_script(script: Path, out: Path, *args: str) -> np.ndarray:
    """Run a saved script in a fresh interpreter (this checkout's package) and read its
    output."""
    env = {**os.environ, "PYTHONPATH": str(Path(napari_xaimed.__file__).parents[1])}
    done = subprocess.run([sys.executable, str(script), "--out", str(out), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_volume(out).data


def public_imports(text: str) -> set[str]:
    """The napari_xaimed modules a script imports from."""
    tree = ast.parse(text)
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module.startswith("napari_xaimed")}


def assert_public(text: str) -> None:
    for module in public_imports(text):
        assert not any(part.startswith("_") for part in module.split(".")), module
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("napari_xaimed"):
            assert not any(alias.name.startswith("_") for alias in node.names)


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    lesion = samples.lesion_volume(shape=(32, 40, 40), seed=0, n_lesions=2)
    write_volume(folder / "ct.nii.gz", lesion.image, spacing=(2.0, 1.0, 1.0))
    return folder / "ct.nii.gz"


def test_cli_segmentation_script_recomputes_and_runs_on_another_file(ct, tmp_path, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(ct), "--out", str(out), "--method", "otsu",
                 "--smoothing-mm", "1", "--min-size-mm3", "5"]) == 0
    assert main(["script", str(out / "labels.json")]) == 0
    script = out / "labels.py"
    assert str(script) in capsys.readouterr().out
    text = script.read_text()
    assert_public(text)
    assert "segment(" in text and "smoothing_mm=1.0" in text
    again = run_script(script, tmp_path / "again.nii.gz")
    np.testing.assert_array_equal(again, read_volume(out / "labels.nii.gz").data)
    assert json.loads((tmp_path / "again.json").read_text())["kind"] == "segmentation"

    # another image: the same computation on it, with its own voxel size
    other = samples.lesion_volume(shape=(24, 30, 30), seed=5, n_lesions=1)
    write_volume(tmp_path / "other.nii.gz", other.image, spacing=(1.5, 1.0, 1.0))
    from napari_xaimed.segmentation import segment

    expected = segment(other.image, "otsu", spacing=(1.5, 1.0, 1.0), smoothing_mm=1.0,
                       min_size_mm3=5.0)
    np.testing.assert_array_equal(
        run_script(script, tmp_path / "other_seg.nii.gz", "--image",
                   str(tmp_path / "other.nii.gz")), expected)


def test_a_script_writes_its_output_in_the_inputs_orientation(tmp_path, capsys):
    """An oblique scan, and a permuted (sagittal-like) LAS one as another input: the script's
    output has its input's affine (nibabel), not identity directions (mirrored, moved)."""
    import nibabel as nib
    from _oblique import oblique_affine, write_nifti

    path = write_nifti(tmp_path / "oblique.nii.gz")
    out = tmp_path / "seg"
    assert main(["segment", str(path), "--out", str(out), "--method", "threshold",
                 "--value", "600"]) == 0
    capsys.readouterr()
    assert main(["script", str(out / "labels.json")]) == 0
    again = tmp_path / "again.nii.gz"
    run_script(out / "labels.py", again)
    np.testing.assert_allclose(nib.load(str(again)).affine, oblique_affine(), atol=1e-5)
    np.testing.assert_allclose(nib.load(str(again)).affine,
                               nib.load(str(out / "labels.nii.gz")).affine, atol=1e-5)
    # another input stored with permuted, flipped axes: the output keeps its affine
    permuted = np.array([[0.0, 0.0, -2.5, 40.0], [0.8, 0.0, 0.0, -20.0],
                         [0.0, -0.7, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]])
    voxels = np.random.default_rng(1).normal(size=(6, 7, 8)).astype(np.float32) * 400
    nib.save(nib.Nifti1Image(voxels, permuted), str(tmp_path / "las.nii.gz"))
    other = tmp_path / "other.nii.gz"
    run_script(out / "labels.py", other, "--image", str(tmp_path / "las.nii.gz"))
    np.testing.assert_allclose(nib.load(str(other)).affine, permuted, atol=1e-5)


def test_a_changed_input_stops_the_script(ct, tmp_path):
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(ct.read_bytes())
    assert main(["segment", str(image), "--out", str(tmp_path / "seg"), "--method", "otsu"]) == 0
    assert main(["script", str(tmp_path / "seg" / "labels.json")]) == 0
    volume = read_volume(image)
    write_volume(image, volume.data * 2, affine=volume.affine)
    env = {**os.environ, "PYTHONPATH": str(Path(napari_xaimed.__file__).parents[1])}
    done = subprocess.run([sys.executable, str(tmp_path / "seg" / "labels.py")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0 and "has changed since the output was computed" in done.stderr


@pytest.mark.parametrize("kind, why", [
    ("sample", "sample data, not a computed output"),
    ("segmentation preview", "live slice preview"),
    ("attribution ensemble", "records its image by name only"),
    ("cohort case", "read from a cohort folder"),
    ("something else", "cannot be computed again"),
])
def test_kinds_without_a_recipe_say_why(kind, why):
    with pytest.raises(XaimedError, match=why):
        script_text({"kind": kind, "params": {}, "sources": ["x"]})


def test_a_lazy_output_is_refused():
    with pytest.raises(XaimedError, match="lazy"):
        script_text({"kind": "registration", "params": {}, "lazy": {"factors": [2, 2, 2]}})


# ------------------------------------------------------------- widget outputs, from the viewer

def run_widget(qtbot, job, button=None) -> None:
    with qtbot.waitSignal(job.finished, timeout=180000) as blocker:
        (button or job.run_button).click()
    assert blocker.args[0] == "done", job.status.text()


def check_layer(layer, viewer, folder: Path) -> str:
    """Save the layer's script with the viewer command's function, run it, compare."""
    from napari_xaimed.cli.layer_script import save_layer_script

    script = save_layer_script(layer, folder, list(viewer.layers))
    text = script.read_text()
    assert_public(text)
    again = run_script(script, folder / "out" / f"{script.stem}.nii.gz")
    np.testing.assert_array_equal(again, np.asarray(layer.data))
    return text


def test_widget_segmentation_of_an_unsaved_layer(qtbot, make_napari_viewer, tmp_path):
    """An image that exists only in the viewer is saved beside the script, which reads it;
    its orientation (here x toward the patient's left, as in an LAS file) is kept in both."""
    import nibabel as nib

    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    lesion = samples.lesion_volume(shape=(32, 40, 40), seed=1, n_lesions=1)
    source = viewer.add_image(lesion.image, name="scan", scale=(2.0, 1.0, 1.0),
                              translate=(5.0, -3.0, 1.0), affine=np.diag([1.0, 1.0, -1.0, 1.0]))
    widget = SegmentationWidget(viewer)
    widget.image.value = source
    widget.method.value = "otsu"
    widget.smoothing.value = 0.5
    run_widget(qtbot, widget.job)
    layer = next(layer for layer in viewer.layers if layer.name.startswith("Otsu segmentation"))
    text = check_layer(layer, viewer, tmp_path)
    assert (tmp_path / "scan.nii.gz").is_file()
    assert str((tmp_path / "scan.nii.gz").resolve()) in text
    out = next((tmp_path / "out").glob("*.nii.gz"))
    assert read_volume(out).spacing == pytest.approx((2.0, 1.0, 1.0))
    assert read_volume(out).translate == pytest.approx((5.0, -3.0, 1.0))
    las = np.diag([-1.0, 1.0, 2.0])  # RAS directions x spacing of the (x, y, z) voxel axes
    for written in (tmp_path / "scan.nii.gz", out):
        np.testing.assert_allclose(nib.load(str(written)).affine[:3, :3], las, atol=1e-6)


def test_widget_evaluation_maps(qtbot, make_napari_viewer, tmp_path):
    from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    widget = EvaluationWidget(viewer)
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    run_widget(qtbot, widget.job)
    errors = next(layer for layer in viewer.layers if layer.name.startswith("Errors"))
    text = check_layer(errors, viewer, tmp_path)
    assert "matching='many_to_one'" in text and "evaluation_map(" in text
    assert not list(tmp_path.glob("*.nii.gz"))  # the samples are generated again, not saved


def test_widget_registration_warped(qtbot, make_napari_viewer, tmp_path):
    from napari_xaimed.viewer.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = RegistrationWidget(viewer)
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.transform.value = "Affine"
    widget.iterations.value = "10, 5"
    run_widget(qtbot, widget.job)
    warped = next(layer for layer in viewer.layers if layer.name.startswith("Warped"))
    text = check_layer(warped, viewer, tmp_path)
    assert "register(" in text and "transform='Affine'" in text
    widget.carry_layer.value = viewer.layers["prior organs"]  # a layer carried along
    run_widget(qtbot, widget.carry_job, widget.carry_job.run_button)
    carried = viewer.layers["prior organs [prior->current]"]
    text = check_layer(carried, viewer, tmp_path / "carried")
    assert "carried = registration.apply(layer.data, 'label')" in text


def test_widget_attribution(qtbot, make_napari_viewer, ct, tmp_path):
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    (source,) = viewer.open(str(ct), plugin="napari-xaimed")
    widget = AttributionWidget(viewer)
    widget.image.value = source
    widget.methods.value = ["integrated_gradients"]
    widget.steps.value = 4
    widget.device.value = "cpu"
    run_widget(qtbot, widget.job)
    heatmap = next(layer for layer in viewer.layers if "Integrated Gradients" in layer.name)
    text = check_layer(heatmap, viewer, tmp_path)
    assert "load_model(" in text and "attribute(" in text and "'integrated_gradients'" in text


def test_the_command_is_in_the_file_menu():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(
        Path(napari_xaimed.__file__).with_name("napari.yaml"))
    command = next(c for c in manifest.contributions.commands
                   if c.id == "napari-xaimed.save_as_script")
    assert command.python_name == "napari_xaimed.cli.layer_script:save_as_script"
    items = manifest.contributions.menus["napari/file/io_utilities"]
    assert any(item.command == command.id for item in items)


def test_cli_registration_displacement_script(tmp_path):
    """The displacement as the CLI writes it (components first): a numpy call in the script."""
    pair = samples.longitudinal_pair(seed=0)
    write_volume(tmp_path / "prior.nii.gz", pair.moving, spacing=pair.spacing)
    write_volume(tmp_path / "current.nii.gz", pair.fixed, spacing=pair.spacing)
    out = tmp_path / "reg"
    assert main(["register", str(tmp_path / "current.nii.gz"), str(tmp_path / "prior.nii.gz"),
                 "--out", str(out), "--transform", "Affine", "--iterations", "10,5",
                 "--seed", "3"]) == 0
    assert main(["script", str(out / "displacement.json")]) == 0
    text = (out / "displacement.py").read_text()
    assert "from numpy import moveaxis" in text and "--fixed" in text and "--moving" in text
    again = run_script(out / "displacement.py", tmp_path / "again.nii.gz")
    np.testing.assert_array_equal(again, read_volume(out / "displacement.nii.gz").data)


def test_the_file_menu_command_writes_the_selected_layers_script(qtbot, make_napari_viewer,
                                                                   ct, tmp_path, monkeypatch):
    from napari._app_model import get_app_model
    from qtpy.QtWidgets import QFileDialog

    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    (source,) = viewer.open(str(ct), plugin="napari-xaimed")
    widget = SegmentationWidget(viewer)
    widget.image.value = source
    widget.method.value = "otsu"
    run_widget(qtbot, widget.job)
    layer = next(layer for layer in viewer.layers if layer.name.startswith("Otsu segmentation"))
    viewer.layers.selection.active = layer
    app = get_app_model()
    items = app.menus.get_menu("napari/file/io_utilities")
    assert any(getattr(item, "command", None) and item.command.id ==
               "napari-xaimed.save_as_script" for item in items)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args, **kwargs: str(tmp_path)))
    app.commands.execute_command("napari-xaimed.save_as_script").result()
    (script,) = tmp_path.glob("*.py")
    again = run_script(script, tmp_path / "again.nii.gz")
    np.testing.assert_array_equal(again, np.asarray(layer.data))
