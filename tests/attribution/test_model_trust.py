"""Loading a model runs no code from its files unless the caller trusts them: a JSON config's
``"module:Class"``, a bundle's ``$`` expressions and foreign ``_target_`` are refused, named,
before any of them runs; MONAI networks and registered ones load as before. The provenance
hash covers the config, so the same weights in another architecture are another model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from monai.networks.nets import Classifier, UNet

from napari_xaimed import XaimedError
from napari_xaimed._core.errors import UntrustedModelError
from napari_xaimed.attribution import load_model, register_network
from napari_xaimed.models import trust as trust_module

UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": 0, "act": "RELU"}
CLASSIFIER = {"in_shape": [1, 8, 8, 8], "classes": 2, "channels": [2, 4], "strides": [2, 2]}


def _state_dict(tmp_path: Path, net: torch.nn.Module, config: dict) -> Path:
    weights = tmp_path / "net.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(config))
    return weights


def _bundle(folder: Path, config: dict, net: torch.nn.Module) -> Path:
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def _unet() -> torch.nn.Module:
    torch.manual_seed(4)
    return UNet(**UNET).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape=(1, 1, 8, 8, 8)) -> bool:
    probe = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a(probe), b(probe), atol=1e-6)


# ------------------------------------------------------------------ state dict + JSON config

def test_a_config_naming_subprocess_run_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    weights = _state_dict(tmp_path, _unet(), {"network": "subprocess:run",
                                              "args": {"args": ["touch", str(marker)]}})
    with pytest.raises(UntrustedModelError) as refused:
        load_model(weights)
    assert not marker.exists()  # refused before anything from the file ran
    message = str(refused.value)
    assert "'subprocess:run'" in message and "trust=True" in message
    assert refused.value.found == ["callable 'subprocess:run' (its config's 'network')"]
    assert refused.value.source == str(weights.with_suffix(".json"))
    assert refused.value.model == str(weights)
    assert isinstance(refused.value, XaimedError)

    # trusted, the file's code is what runs (here it is no network, which is then said)
    with pytest.raises(XaimedError, match="not a torch.nn.Module"):
        load_model(weights, trust=True)
    assert marker.exists()


def test_a_trusted_module_class_network_loads_and_is_recorded_as_trusted(tmp_path):
    torch.manual_seed(1)
    net = Classifier(**CLASSIFIER).eval()
    weights = _state_dict(tmp_path, net, {"network": "monai.networks.nets.classifier:Classifier",
                                          "args": CLASSIFIER})
    with pytest.raises(UntrustedModelError, match="monai.networks.nets.classifier:Classifier"):
        load_model(weights)
    loaded = load_model(weights, trust=True)
    assert _same_outputs(loaded.module, net)
    assert loaded.trusted and loaded.provenance()["trusted"] is True
    # the same network by its MONAI name runs nothing from the file: no trust needed
    weights.with_suffix(".json").write_text(json.dumps({"network": "Classifier",
                                                        "args": CLASSIFIER}))
    plain = load_model(weights)
    assert _same_outputs(plain.module, net) and not plain.trusted
    # the bundled models name no code either
    assert not load_model("bundled").trusted and not load_model("bundled-segmenter").trusted


class MyNet(torch.nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, width, 1)
        self.pool = torch.nn.AdaptiveAvgPool3d(1)
        self.flatten = torch.nn.Flatten()

    def forward(self, x):
        return self.flatten(self.pool(self.conv(x)))


def test_register_network_lets_a_config_name_a_scripts_network(tmp_path, monkeypatch):
    monkeypatch.setattr(trust_module, "_REGISTERED", {})
    torch.manual_seed(2)
    net = MyNet(width=4).eval()
    weights = _state_dict(tmp_path, net, {"network": "MyNet", "args": {"width": 4}})
    with pytest.raises(XaimedError, match="register_network"):
        load_model(weights)
    register_network("MyNet", MyNet)
    loaded = load_model(weights)
    assert isinstance(loaded.module, MyNet) and _same_outputs(loaded.module, net)
    assert not loaded.trusted
    with pytest.raises(XaimedError, match="MONAI network"):
        register_network("UNet", MyNet)
    with pytest.raises(XaimedError, match="plain name"):
        register_network("my.module:MyNet", MyNet)
    with pytest.raises(XaimedError, match="network class"):
        register_network("Other", 3)


# ----------------------------------------------------------------------------- MONAI bundles

def test_a_bundle_naming_monai_networks_loads_without_trust(tmp_path):
    net = _unet()
    marker = tmp_path / "ran"
    # an expression the network does not need is neither refused nor run
    unused = f"$open(r'{marker}', 'w').close()"
    for i, target in enumerate(("monai.networks.nets.UNet", "UNet")):
        folder = _bundle(tmp_path / f"b{i}", {"device": unused, "spatial": 3,
                                              "network_def": {"_target_": target, **UNET,
                                                              "spatial_dims": "@spatial"}},
                         net)
        loaded = load_model(folder)
        assert isinstance(loaded.module, UNet) and _same_outputs(loaded.module, net)
        assert not loaded.trusted
    assert not marker.exists()


def test_bundle_expressions_and_foreign_targets_are_refused_naming_them(tmp_path):
    net = _unet()
    marker = tmp_path / "ran"
    side_effect = f"$open(r'{marker}', 'w').close() or [4, 8]"
    cases = {
        # an expression reached through a reference, and an import anywhere in the file
        "expression": ({"imports": ["$import os"], "widths": side_effect,
                        "network_def": {"_target_": "UNet", **UNET, "channels": "@widths"}},
                       ["'$import os' (at imports#0", f"{side_effect!r} (at widths)"]),
        "foreign": ({"network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1,
                                     "out_channels": 2, "kernel_size": 1}},
                    ["_target_ 'torch.nn.Conv3d' (at network_def"]),
        # a MONAI component that is no network, reached through a reference
        "not a network": ({"loader": {"_target_": "LoadImage"},
                           "network_def": {"_target_": "UNet", **UNET, "act": "@loader"}},
                          ["_target_ 'LoadImage' (at loader"]),
        # a macro pulls the component in from elsewhere in the file
        "macro": ({"net": {"_target_": "torch.nn.Identity"}, "network_def": "%net"},
                  ["_target_ 'torch.nn.Identity' (at network_def"]),
        "debugger": ({"network_def": {"_target_": "UNet", "_mode_": "debug", **UNET}},
                     ["_mode_ 'debug' (at network_def)"]),
    }
    for name, (config, expected) in cases.items():
        folder = _bundle(tmp_path / name.replace(" ", "_"), config, net)
        with pytest.raises(UntrustedModelError) as refused:
            load_model(folder)
        assert len(refused.value.found) == len(expected), (name, refused.value.found)
        for found, wanted in zip(refused.value.found, expected, strict=True):
            assert wanted in found, (name, found)
        assert refused.value.model == str(folder)
        assert "trust=True" in str(refused.value)
    assert not marker.exists()

    # trusted, the expression runs and the network is built from its value
    loaded = load_model(tmp_path / "expression", trust=True)
    assert marker.exists() and loaded.trusted and _same_outputs(loaded.module, net)


@pytest.mark.parametrize("network_def", ["hello", 3, None, [1, 2],
                                         {"_target_": "UNet", "_disabled_": True, **UNET}])
def test_a_bundle_whose_network_def_is_not_a_network_is_a_clear_error(tmp_path, network_def):
    folder = _bundle(tmp_path / "b", {"network_def": network_def}, _unet())
    with pytest.raises(XaimedError, match="not a network"):
        load_model(folder)


def test_a_bundle_without_network_def_or_with_mismatched_weights_is_a_clear_error(tmp_path):
    with pytest.raises(XaimedError, match="no network_def"):
        load_model(_bundle(tmp_path / "a", {"other": 1}, _unet()))
    small = {**UNET, "channels": [2, 4]}
    with pytest.raises(XaimedError, match="do not fit"):
        load_model(_bundle(tmp_path / "b", {"network_def": {"_target_": "UNet", **small}},
                           _unet()))


# ------------------------------------------------------------------------- provenance hashes

def test_the_config_hash_tells_the_same_weights_in_another_architecture_apart(tmp_path):
    net = _unet()
    weights = _state_dict(tmp_path, net, {"network": "UNet", "args": UNET})
    before = load_model(weights)
    other = {**UNET, "act": "LEAKYRELU"}  # no weights of its own: the same state dict fits
    weights.with_suffix(".json").write_text(json.dumps({"network": "UNet", "args": other}))
    after = load_model(weights)
    assert after.sha256 == before.sha256
    assert after.config_sha256 != before.config_sha256
    assert before.provenance()["config_sha256"] == before.config_sha256
    # the layout of the file does not count, its content does
    weights.with_suffix(".json").write_text(json.dumps({"args": UNET, "network": "UNet"},
                                                       indent=4))
    assert load_model(weights).config_sha256 == before.config_sha256

    folder = _bundle(tmp_path / "bundle", {"network_def": {"_target_": "UNet", **UNET}}, net)
    first = load_model(folder)
    moved = shutil.copytree(folder, tmp_path / "moved")  # where the bundle lies does not count
    assert load_model(moved).config_sha256 == first.config_sha256
    (folder / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "UNet", **other}}))
    edited = load_model(folder)
    assert edited.sha256 == first.sha256 and edited.config_sha256 != first.config_sha256


# ------------------------------------------------------------- trust as the config was shown

def _marker_config(marker: Path, args: dict) -> dict:
    """A config naming ``subprocess:run`` with ``touch``: ``marker`` exists once its code ran."""
    return {"network": "subprocess:run", "args": {"args": ["touch", str(marker)], **args}}


def test_trust_given_as_the_reviewed_config_runs_only_that_config(tmp_path):
    """Trust given as the SHA-256 of the config the user reviewed (what a widget's Yes
    passes) runs nothing once the config was edited after the review: it is refused again,
    with the new config's digest, and the marker its code would write is not written."""
    import pickle

    reviewed = tmp_path / "reviewed"
    weights = _state_dict(tmp_path, _unet(), _marker_config(reviewed, {}))
    with pytest.raises(UntrustedModelError) as refused:
        load_model(weights)
    digest = refused.value.config_sha256
    assert digest == trust_module.config_sha256(json.loads(weights.with_suffix(".json")
                                                           .read_text()))
    again = pickle.loads(pickle.dumps(refused.value))  # a Dask worker's refusal travels so
    assert (again.found, again.model, again.config_sha256, str(again)) == (
        refused.value.found, refused.value.model, digest, str(refused.value))

    edited = tmp_path / "edited"  # the file changes between the dialog and the load
    weights.with_suffix(".json").write_text(json.dumps(_marker_config(edited, {})))
    with pytest.raises(UntrustedModelError) as refused_again:
        load_model(weights, trust=digest)
    assert not edited.exists() and not reviewed.exists()
    assert refused_again.value.config_sha256 not in (None, digest)

    weights.with_suffix(".json").write_text(json.dumps(_marker_config(reviewed, {})))
    with pytest.raises(XaimedError, match="not a torch.nn.Module"):
        load_model(weights, trust=digest)  # the reviewed config: its code runs
    assert reviewed.exists() and not edited.exists()


def test_expected_hashes_refuse_a_changed_model_before_its_code_runs(tmp_path):
    """A rerun's recorded hashes are checked as the files are read: a config (or weights)
    changed since is refused before the network is built, even with trust."""
    marker = tmp_path / "ran"
    net = _unet()
    weights = _state_dict(tmp_path, net, {"network": "UNet", "args": UNET})
    recorded = load_model(weights)
    expect = {"sha256": recorded.sha256, "config_sha256": recorded.config_sha256}
    assert load_model(weights, expect=expect).sha256 == recorded.sha256

    weights.with_suffix(".json").write_text(json.dumps(_marker_config(marker, {})))
    with pytest.raises(XaimedError, match="SHA-256 of its config .* differs"):
        load_model(weights, trust=True, expect=expect)
    assert not marker.exists()

    weights.with_suffix(".json").write_text(json.dumps({"network": "UNet", "args": UNET}))
    torch.manual_seed(9)
    torch.save(UNet(**UNET).state_dict(), weights)  # other weights, same architecture
    with pytest.raises(XaimedError, match="SHA-256 of its weights differs"):
        load_model(weights, expect=expect)

    folder = _bundle(tmp_path / "bundle", {"network_def": {"_target_": "UNet", **UNET}}, net)
    loaded = load_model(folder)
    side_effect = f"$open(r'{marker}', 'w').close() or [4, 8]"
    (folder / "configs" / "inference.json").write_text(json.dumps(
        {"widths": side_effect, "network_def": {"_target_": "UNet", **UNET,
                                                "channels": "@widths"}}))
    with pytest.raises(XaimedError, match="SHA-256 of its config"):
        load_model(folder, trust=True, expect={"sha256": loaded.sha256,
                                               "config_sha256": loaded.config_sha256})
    assert not marker.exists()
