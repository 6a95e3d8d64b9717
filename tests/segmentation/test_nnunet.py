"""nnU-Net v2 result folders: loading, segmentation identical to nnUNetPredictor's, errors.

The folder is built once per module by nnU-Net's own planning and preprocessing and a short
seeded training (:func:`napari_xaimed.training.nnunet_sample.build_tiny_nnunet`: 16x32x32
cases, so nnU-Net plans a 16x32x32 patch; a network of 4 to 32 features); a second fold is the
trained one with seeded noise on its weights. The reference is nnU-Net's own
``nnUNetPredictor`` initialised from the folder the way nnU-Net does it, computed once per set
of folds.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from napari_xaimed import XaimedError
from napari_xaimed._errors import UntrustedModelError
from napari_xaimed.attribution import load_model
from napari_xaimed.attribution.methods import CAM_LAYER_METHODS
from napari_xaimed.models.nnunet import NnUNetModel
from napari_xaimed.segmentation import segment
from napari_xaimed.training.nnunet_sample import build_tiny_nnunet, synthetic_case

pytestmark = pytest.mark.slow

# the test image: another shape, spacing and an origin than the training cases
SPACING_ZYX = (2.5, 0.7, 1.1)
ORIGIN_XYZ = (-12.5, 30.0, 7.25)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny network in one torch thread: a second gains little on it, and on a loaded
    machine OpenMP's threads waiting for each other made this module 3x slower (5 min against
    1.5)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a folder built earlier by the same builder (seed 0, extra fold 1) saves the training
    prebuilt = os.environ.get("XAIMED_TINY_NNUNET")
    if prebuilt:
        return Path(prebuilt)
    return build_tiny_nnunet(tmp_path_factory.mktemp("nnunet"), seed=0, extra_folds=(1,))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # on nnU-Net's grid (2 x 0.9 x 0.9 mm) 15 x 40 x 44 voxels: padded to the patch along z,
    # 2 x 2 overlapping windows in-plane
    image, _ = synthetic_case(99, shape=(12, 52, 36))
    itk = sitk.GetImageFromArray(image)
    itk.SetSpacing(SPACING_ZYX[::-1])
    itk.SetOrigin(ORIGIN_XYZ)
    path = tmp_path_factory.mktemp("image") / "case_0000.nii.gz"
    sitk.WriteImage(itk, str(path))
    return path


_REFERENCES: dict[tuple[str, str, tuple[int, ...]], np.ndarray] = {}


def _reference(folder: Path, image_file: Path, folds: tuple[int, ...]) -> np.ndarray:
    """nnUNetPredictor's labels for the image, initialised by nnU-Net from the folder (computed
    once per folder, image and folds: a read-only copy)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    key = (str(folder), str(image_file), tuple(folds))
    if key not in _REFERENCES:
        predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(folder), folds,
                                                       "checkpoint_final.pth")
        itk = sitk.ReadImage(str(image_file))
        array = sitk.GetArrayFromImage(itk).astype(np.float32)
        labels = predictor.predict_single_npy_array(array[None],
                                                    {"spacing": itk.GetSpacing()[::-1]})
        labels.flags.writeable = False
        _REFERENCES[key] = labels
    return _REFERENCES[key]


def _image(image_file: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(image_file))).astype(np.float32)


def test_labels_equal_nnunet_predictor(folder: Path, image_file: Path) -> None:
    expected = _reference(folder, image_file, (0,))
    assert 0 < np.count_nonzero(expected) < expected.size  # a model that segments something
    loaded = load_model(folder, folds=0, device="cpu")
    again = segment(_image(image_file), "model", spacing=SPACING_ZYX, model=loaded)
    assert isinstance(loaded, NnUNetModel)
    assert loaded.classes == ["background", "bright", "dim"]
    assert again.shape == expected.shape
    np.testing.assert_array_equal(again, expected)


def test_fold_ensemble_equals_nnunet_predictor(folder: Path, image_file: Path) -> None:
    expected = _reference(folder, image_file, (0, 1))
    one = _reference(folder, image_file, (0,))
    assert np.any(expected != one)  # the second fold changes the ensemble
    loaded = load_model(folder, device="cpu")  # default: all folds present
    assert loaded.folds == [0, 1]
    labels = segment(_image(image_file), "model", spacing=SPACING_ZYX, model=loaded)
    np.testing.assert_array_equal(labels, expected)


def test_cli_segment_matches_predictor_on_the_image_grid(folder: Path, image_file: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "napari_xaimed.cli.main", "segment",
                           str(image_file), "--method", "model", "--model", str(folder),
                           "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sitk.ReadImage(str(out / "labels.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written),
                                  _reference(folder, image_file, (0, 1)))
    source = sitk.ReadImage(str(image_file))
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-5)
    facts = json.loads((out / "segmentation.json").read_text())
    assert facts["result"]["facts"]["classes"] == ["background", "bright", "dim"]


def test_missing_file_is_named(folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "plans.json").unlink()
    with pytest.raises(XaimedError, match=r"plans\.json missing"):
        load_model(broken)


def test_fold_that_does_not_exist(folder: Path) -> None:
    with pytest.raises(XaimedError, match=r"fold 7 does not exist.*fold_0, fold_1"):
        load_model(folder, folds=7)
    # fold 1 (made from fold 0) holds only checkpoint_final.pth
    with pytest.raises(XaimedError, match=r"no checkpoint_best\.pth.*checkpoint_final\.pth"):
        load_model(folder, folds=1, checkpoint="checkpoint_best.pth")


def test_checkpoint_of_another_version(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    # an nnU-Net v1-style checkpoint dict (state_dict, no network_weights/init_args)
    state = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    torch.save({"state_dict": state["network_weights"], "epoch": 3},
               other / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(XaimedError, match="not an nnU-Net v2 checkpoint"):
        load_model(other, folds=0)
    v1 = tmp_path / "v1"
    (v1 / "fold_0").mkdir(parents=True)
    (v1 / "plans.pkl").write_bytes(b"")
    (v1 / "fold_0" / "model_final_checkpoint.model").write_bytes(b"")
    with pytest.raises(XaimedError, match="nnU-Net v1 result"):
        load_model(v1)


def test_untrusted_network_class_is_refused(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    plans = json.loads((other / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = \
        "os.system"
    (other / "plans.json").write_text(json.dumps(plans))
    # the same refusal as other models' (the widget asks whether to trust the folder)
    with pytest.raises(UntrustedModelError, match=r"'os\.system'.*trust=True"):
        load_model(other, folds=0)


def test_checkpoint_needing_full_unpickling_is_refused(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    state = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    state["extra"] = Path("/")  # any class outside the weights-only allow list
    torch.save(state, other / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(UntrustedModelError, match="trust=True") as refused:
        load_model(other, folds=0)
    assert refused.value.model == str(other)
    assert isinstance(load_model(other, folds=0, trust=True), NnUNetModel)


def test_nnunet_not_installed(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_nnunet(name: str, *args, **kwargs):
        if name == "nnunetv2" or name.startswith("nnunetv2."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nnunet)
    with pytest.raises(XaimedError, match=r"pip install --no-deps nnunetv2"):
        load_model(folder, folds=0)


def test_monai_settings_are_refused(folder: Path, image_file: Path) -> None:
    with pytest.raises(XaimedError, match="overlap cannot be set"):
        segment(_image(image_file), "model", spacing=SPACING_ZYX, model=str(folder),
                overlap=0.5)


def test_widget_segments_with_an_nnunet_folder(qtbot, make_napari_viewer, folder: Path,
                                               image_file: Path) -> None:
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    viewer.add_image(_image(image_file), name="ct", scale=SPACING_ZYX,
                     translate=(7.25, 30.0, -12.5))
    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value = viewer.layers["ct"]
    widget.method.value = "model"
    widget.model_source.value = "folder"
    widget.model_folder.value = folder
    widget.device.value = "cpu"
    with qtbot.waitSignal(widget.job.finished, timeout=600000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done", widget.job.status.text()
    labels = viewer.layers["Model segmentation [ct]"]
    np.testing.assert_array_equal(labels.data, _reference(folder, image_file, (0, 1)))
    # the classes named as the result folder's dataset.json names them
    names = json.loads((folder / "dataset.json").read_text())["labels"]
    assert list(labels.features["name"]) == sorted(names, key=names.get)
    np.testing.assert_allclose(labels.scale, SPACING_ZYX)
    np.testing.assert_allclose(labels.translate, (7.25, 30.0, -12.5))


# -- attribution ---------------------------------------------------------------------------------

def _nnunet_logits(folder: Path, volume: np.ndarray) -> tuple[torch.Tensor, dict]:
    """nnU-Net's own sliding-window logits of fold 0 on its preprocessed volume."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), (0,), "checkpoint_final.pth")
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, props = preprocessor.run_case_npy(
        volume[None], None, {"spacing": list(SPACING_ZYX)}, predictor.plans_manager,
        predictor.configuration_manager, predictor.dataset_json)
    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data).float())
    return logits.float(), props


def test_sliding_logits_are_nnunets(folder: Path, image_file: Path) -> None:
    from napari_xaimed.attribution.nnunet_explain import SlidingLogits

    volume = _image(image_file)
    expected, _ = _nnunet_logits(folder, volume)
    loaded = load_model(folder, folds=0, device="cpu")
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

    predictor = loaded.predictor
    data = next(PreprocessAdapterFromNpy(
        [volume[None]], [None], [{"spacing": list(SPACING_ZYX)}], [None],
        predictor.plans_manager, predictor.dataset_json, predictor.configuration_manager,
        num_threads_in_multithreaded=1))["data"]
    with torch.no_grad():
        ours = SlidingLogits(loaded, loaded.module)(data[None].float())[0]
    # nnU-Net accumulates the weighted logits and the weights in float16 (coarse where the
    # Gaussian weights are small, at the windows' edges); ours in float32
    diff = np.abs(ours.numpy() - expected.numpy())
    assert diff.mean() < 0.01 and np.quantile(diff, 0.99) < 0.05 and diff.max() < 1.0
    assert np.mean(ours.argmax(0).numpy() == expected.argmax(0).numpy()) > 0.999


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients",
                                    "smoothgrad", "gradcam", "gradcam_pp", "scorecam",
                                    "eigencam", "guided_backprop", "deeplift"])
def test_attribution_of_a_label_on_the_image_grid(folder: Path, image_file: Path,
                                                  method: str) -> None:
    from napari_xaimed.attribution import attribute

    volume = _image(image_file)
    loaded = load_model(folder, folds=0, device="cpu")
    params = {"steps": 4} if method == "integrated_gradients" else \
        {"samples": 2} if method == "smoothgrad" else {}
    if method in CAM_LAYER_METHODS:  # four windows: one layer map per window, a stated refusal
        with pytest.raises(XaimedError, match="runs the network 4 times"):
            attribute(loaded, volume, method, target=1, spacing=SPACING_ZYX, mirroring=False)
        return
    result = attribute(loaded, volume, method, target=1, spacing=SPACING_ZYX,
                       mirroring=False, **params)
    assert result.map.shape == volume.shape
    assert np.isfinite(result.map).all() and np.abs(result.map).max() > 0
    assert result.params["nnunet"]["class"] == "bright"


def test_attribution_of_one_structure_matches_a_drawn_region(folder: Path,
                                                             image_file: Path) -> None:
    """structure=1 is the largest connected structure of the class in nnU-Net's labels: the
    same map as drawing exactly that structure as the region."""
    import cc3d

    from napari_xaimed.attribution import attribute

    volume = _image(image_file)
    labels = _reference(folder, image_file, (0,))
    components = cc3d.connected_components(labels == 1, connectivity=26)
    sizes = np.bincount(components.ravel())[1:]
    largest = components == int(np.argmax(sizes)) + 1
    loaded = load_model(folder, folds=0, device="cpu")
    by_structure = attribute(loaded, volume, "saliency", target=1, structure=1,
                             spacing=SPACING_ZYX, mirroring=False)
    by_region = attribute(loaded, volume, "saliency", target=1, region=largest,
                          spacing=SPACING_ZYX, mirroring=False)
    np.testing.assert_allclose(by_structure.map, by_region.map, rtol=1e-5, atol=1e-8)
    assert by_structure.params["structure_voxels"] == int(largest.sum())
    with pytest.raises(XaimedError, match="structure 99 does not exist"):
        attribute(loaded, volume, "saliency", target=1, structure=99, spacing=SPACING_ZYX)
