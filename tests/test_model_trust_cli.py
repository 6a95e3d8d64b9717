"""``--trust`` on the command line, and reruns of outputs made with a model: a file that names
code runs only with ``--trust``, also when it is rerun, and a rerun refuses the same weights in
another architecture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import Classifier, UNet

from napari_xaimed import samples
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import cli_inputs, provenance
from napari_xaimed.attribution import attribute, load_model
from napari_xaimed.cli.main import main
from napari_xaimed.cli.rerun import rerun
from napari_xaimed.io import read_volume, write_volume
from napari_xaimed.segmentation import segment_with_model

UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": 0, "act": "RELU"}
CLASSIFIER = {"in_shape": [1, 8, 8, 8], "classes": 2, "channels": [2, 4], "strides": [2, 2]}


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ct")
    lesion = samples.lesion_volume(shape=(16, 24, 24), seed=1, n_lesions=1)
    write_volume(folder / "ct.nii.gz", lesion.image, spacing=(2.0, 1.0, 1.0))
    return folder / "ct.nii.gz"


def _unet_file(folder: Path, network: str) -> Path:
    folder.mkdir(parents=True)
    torch.manual_seed(5)
    weights = folder / "unet.pt"
    torch.save(UNet(**UNET).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps({"network": network, "args": UNET}))
    return weights


def test_segment_and_its_rerun_run_a_files_code_only_with_trust(ct, tmp_path, capsys):
    weights = _unet_file(tmp_path / "model", "monai.networks.nets.unet:UNet")
    out = tmp_path / "seg"
    args = ["segment", str(ct), "--out", str(out), "--method", "model", "--model",
            str(weights), "--roi-size", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'monai.networks.nets.unet:UNet'" in err and "--trust" in err
    assert not (out / "labels.nii.gz").exists()

    assert main([*args, "--trust"]) == 0
    image = read_volume(ct)
    expected = segment_with_model(image.data, load_model(weights, trust=True),
                                  spacing=image.spacing, roi_size=16)
    np.testing.assert_array_equal(read_volume(out / "labels.nii.gz").data, expected.labels)
    prov = json.loads((out / "labels.json").read_text())
    assert prov["facts"]["model"]["trusted"] is True
    assert "trust" not in prov["params"]  # the leave is not a setting a rerun may reuse

    capsys.readouterr()
    assert main(["rerun", str(out / "labels.json"), "--check"]) == 2
    assert "--trust" in capsys.readouterr().err
    assert main(["rerun", str(out / "labels.json"), "--check", "--trust"]) == 0
    assert "identical" in capsys.readouterr().out


def test_rerun_refuses_the_same_weights_in_another_architecture(ct, tmp_path):
    weights = _unet_file(tmp_path / "model", "UNet")  # a MONAI network: no trust needed
    out = tmp_path / "seg"
    assert main(["segment", str(ct), "--out", str(out), "--method", "model", "--model",
                 str(weights), "--roi-size", "16"]) == 0
    assert rerun(out / "labels.json", tmp_path / "again", check=True).identical
    # LeakyReLU has no weights: the state dict still fits, the network is another one
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "UNet", "args": {**UNET, "act": "LEAKYRELU"}}))
    with pytest.raises(XaimedError, match="SHA-256 of its config"):
        rerun(out / "labels.json", tmp_path / "again", check=True)


def test_attribution_rerun_refuses_a_changed_config(ct, tmp_path):
    """An attribution's provenance as the widget writes it: rerun redoes it while the model is
    unchanged, and refuses it once the config beside the same weights changed."""
    weights = tmp_path / "clf.pt"
    torch.manual_seed(2)
    torch.save(Classifier(**CLASSIFIER).state_dict(), weights)
    config = {"network": "Classifier", "args": CLASSIFIER,
              "preprocessing": {"input_size": [8, 8, 8], "scaling": "zscore"}}
    weights.with_suffix(".json").write_text(json.dumps(config))
    image = read_volume(ct)
    result = attribute(str(weights), image.data, "saliency", device="cpu")
    prov = provenance("attribution", sources=["ct"], device=result.device,
                      params={"method": "saliency", **result.params,
                              "target_index": result.target},
                      model=result.model, inputs=cli_inputs(image=(ct, image)))
    write_volume(tmp_path / "out" / "saliency.nii.gz", result.map, affine=image.affine,
                 metadata=prov)
    assert rerun(tmp_path / "out" / "saliency.json", tmp_path / "again", check=True).identical
    config["preprocessing"]["scaling"] = "minmax"
    weights.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(XaimedError, match="SHA-256 of its config"):
        rerun(tmp_path / "out" / "saliency.json", tmp_path / "again", check=True)
