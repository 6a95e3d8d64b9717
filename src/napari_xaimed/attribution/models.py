"""Loading a model to explain, and checking it against a volume before anything runs.

Accepted: a ``torch.nn.Module``; a TorchScript file; a state dict (``.pt``/``.pth``) with a JSON
config beside it (``<file>.json``: a MONAI network name or ``"module:Class"``, its arguments,
the preprocessing and class names); a MONAI bundle folder (``configs/inference.json`` with a
``network_def``, weights in ``models/model.pt``); a trained nnU-Net v2 result folder
(``plans.json``, ``dataset.json``, ``fold_k/checkpoint_final.pth``: see
:mod:`napari_xaimed.attribution.nnunet`); or ``"bundled"``, the lesion classifier that
ships with the package, or ``"bundled-segmenter"``, the lesion segmentation network.
"""

from __future__ import annotations

import importlib
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_xaimed._errors import XaimedError
from napari_xaimed._provenance import file_sha256
from napari_xaimed.attribution.preprocess import Preprocessing

BUNDLED = "bundled"
BUNDLED_SEGMENTER = "bundled-segmenter"
# The shape checks of each module passed in directly, remembered across calls (a script
# explaining one model with several methods); weak, so the module can still be freed.
_CHECKS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()
_CAM_LAYERS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


@dataclass
class LoadedModel:
    """A model ready to explain.

    Attributes
    ----------
    module : torch.nn.Module
        In eval mode.
    preprocessing : Preprocessing
        How volumes become its input (from its config; overridable per call).
    classes : list of str
        Output class names, when known.
    source : str
        Where it came from (a path, ``"bundled"`` or ``"module"``).
    sha256 : str or None
        Of the weights file, for provenance.
    """

    module: torch.nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    classes: list[str] = field(default_factory=list)
    source: str = "module"
    sha256: str | None = None
    # (input shape, device) -> number of classes of a classifier already checked on such input
    checked: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)
    # (input shape, device, layer asked for) -> the Grad-CAM layer chosen on such input
    cam_layers: dict[tuple[Any, ...], str] = field(default_factory=dict, repr=False)

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "classes": self.classes,
                "class": type(self.module).__name__}


def build_network(name: str, args: dict[str, Any]) -> torch.nn.Module:
    """A MONAI network by name (``"Classifier"``, ``"DenseNet121"``, ``"UNet"`` ...) or any
    ``"package.module:Class"``, called with ``args``."""
    if ":" in name:
        module_name, class_name = name.split(":", 1)
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise XaimedError(f"cannot import the network {name!r}: {exc}.") from exc
    else:
        import monai.networks.nets as nets

        if not hasattr(nets, name):
            raise XaimedError(f"{name!r} is not a MONAI network (monai.networks.nets); write "
                              "'package.module:Class' for your own.")
        cls = getattr(nets, name)
    try:
        return cls(**args)
    except TypeError as exc:
        raise XaimedError(f"the arguments for {name} do not fit it: {exc}.") from exc


def _from_config(weights: Path, config: dict[str, Any]) -> LoadedModel:
    if "network" not in config:
        raise XaimedError(f"the config beside {weights.name} needs a 'network' (a MONAI network "
                          "name or 'module:Class') and its 'args'.")
    module = build_network(config["network"], dict(config.get("args", {})))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise XaimedError(f"cannot read the weights {weights.name}: {exc}. Is it a state dict "
                          "saved with torch.save(model.state_dict(), path)?") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                      dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise XaimedError(f"the weights in {weights.name} do not fit {config['network']} with "
                          f"these arguments: {str(exc).splitlines()[0]}") from exc
    return LoadedModel(module.eval(), Preprocessing.from_dict(config.get("preprocessing")),
                       list(config.get("classes", [])), str(weights), file_sha256(weights))


def _from_bundle(folder: Path) -> LoadedModel:
    config_path = next((p for p in (folder / "configs" / "inference.json",
                                    folder / "configs" / "inference.yaml") if p.exists()), None)
    weights = folder / "models" / "model.pt"
    if config_path is None or not weights.exists():
        raise XaimedError(f"{folder} is not a MONAI bundle: it needs configs/inference.json (or "
                          ".yaml) and models/model.pt.")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_path))
    parser["bundle_root"] = str(folder)
    try:
        module = parser.get_parsed_content("network_def")
    except Exception as exc:  # noqa: BLE001
        raise XaimedError(f"the bundle's network_def cannot be built: {exc}.") from exc
    state = torch.load(weights, map_location="cpu", weights_only=True)
    module.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    return LoadedModel(module.eval(), Preprocessing(), [], str(folder), file_sha256(weights))


def load_model(model: Any, config: dict[str, Any] | None = None, *, folds: Any = None,
               checkpoint: str = "checkpoint_final.pth", device: Any = "auto",
               trust: bool = False) -> LoadedModel:
    """Load a model to explain (see the module docstring for what is accepted).

    Parameters
    ----------
    model : torch.nn.Module, str, pathlib.Path or LoadedModel
        A module, a file or bundle folder, ``"bundled"`` or ``"bundled-segmenter"``.
    config : dict, optional
        For a state dict: the config instead of the JSON file beside it; for a module or a
        TorchScript file: ``preprocessing`` and ``classes``.
    folds, checkpoint, device : optional
        For an nnU-Net result folder: the folds to ensemble (default all present), the
        checkpoint file name and the device its predictor runs on.
    trust : bool
        nnU-Net: allow checkpoints that need full unpickling and network classes outside
        ``dynamic_network_architectures`` (code named by the files).

    Returns
    -------
    LoadedModel
    """
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, torch.nn.Module):
        config = config or {}
        return LoadedModel(model.eval(), Preprocessing.from_dict(config.get("preprocessing")),
                           list(config.get("classes", [])),
                           checked=_CHECKS.setdefault(model, {}),
                           cam_layers=_CAM_LAYERS.setdefault(model, {}))
    if model in (BUNDLED, BUNDLED_SEGMENTER):
        if model == BUNDLED:
            from napari_xaimed.attribution.lesion_model import WEIGHTS
        else:
            from napari_xaimed.segmentation.lesion_segmenter import WEIGHTS

        loaded = load_model(WEIGHTS)
        loaded.source = model
        return loaded
    path = Path(model)
    if not path.exists():
        raise XaimedError(f"model file {path} does not exist.")
    if path.is_dir():
        from napari_xaimed.attribution.nnunet import is_nnunet_folder, load_nnunet

        if is_nnunet_folder(path):
            return load_nnunet(path, folds, checkpoint, device, trust)
        return _from_bundle(path)
    sidecar = path.with_suffix(".json")
    if config is None and sidecar.exists():
        config = json.loads(sidecar.read_text())
    if config is not None and "network" in config:
        return _from_config(path, config)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise XaimedError(
            f"{path.name} is neither TorchScript nor a state dict with a config: save the "
            f"model with torch.jit.save, or put a JSON beside it ({sidecar.name}) naming the "
            f"network and its arguments. ({type(exc).__name__})") from exc
    config = config or {}
    return LoadedModel(module.eval(), Preprocessing.from_dict(config.get("preprocessing")),
                       list(config.get("classes", [])), str(path), file_sha256(path))


class Scores(torch.nn.Module):
    """The model's scores: its output, or the first element of an output tuple (MONAI's ViT
    returns ``(logits, hidden_states)``)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        return out
