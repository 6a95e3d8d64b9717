"""Loading a model to explain, and checking it against a volume before anything runs.

Accepted: a ``torch.nn.Module``; a TorchScript file; a state dict (``.pt``/``.pth``) with a JSON
config beside it (``<file>.json``: a MONAI network name, a name registered with
:func:`~napari_xaimed.models.trust.register_network` or ``"module:Class"``, its arguments,
the preprocessing and class names); a MONAI bundle folder (``configs/inference.json`` with a
``network_def``, weights in ``models/model.pt``); a trained nnU-Net v2 result folder
(``plans.json``, ``dataset.json``, ``fold_k/checkpoint_final.pth``: see
:mod:`napari_xaimed.models.nnunet`); or ``"bundled"``, the lesion classifier that
ships with the package, or ``"bundled-segmenter"``, the lesion segmentation network.

What loading runs: weights are read with ``torch.load(weights_only=True)`` (tensors only, no
pickled Python); a TorchScript file is a compiled graph of torch operations (no Python from the
file runs, but the graph is the model's own program, run at every forward pass); a config
naming ``"module:Class"``, or a bundle whose ``network_def`` needs ``$`` expressions or a
``_target_`` outside ``monai.networks.nets``, runs code from the file and is refused unless
``trust=True`` (:mod:`napari_xaimed.models.trust`).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_xaimed._core.errors import UntrustedModelError, XaimedError
from napari_xaimed._core.provenance import file_sha256
from napari_xaimed.models.loaded import LoadedModel
from napari_xaimed.models.preprocess import Preprocessing
from napari_xaimed.models.trust import (
    bundle_code,
    check_trusted,
    config_sha256,
    model_config_file,
    names_code,
    network_class,
)

BUNDLED = "bundled"
BUNDLED_SEGMENTER = "bundled-segmenter"
# The shape checks of each module passed in directly, remembered across calls (a script
# explaining one model with several methods); weak, so the module can still be freed.
_CHECKS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()
_CAM_LAYERS: weakref.WeakKeyDictionary[torch.nn.Module, dict] = weakref.WeakKeyDictionary()


def build_network(name: str, args: dict[str, Any], *, trust: bool = False,
                  source: str = "the config") -> torch.nn.Module:
    """A network by name, called with ``args``: a MONAI network (``"Classifier"``,
    ``"DenseNet121"``, ``"UNet"`` ...), one registered with
    :func:`~napari_xaimed.models.trust.register_network`, or, only with ``trust=True``,
    any ``"package.module:Class"``."""
    cls = network_class(name, trust=trust, source=source)
    if not isinstance(args, dict):
        raise XaimedError(f"the 'args' of {name} in {source} must be a JSON object of keyword "
                          f"arguments, got {type(args).__name__}.")
    try:
        module = cls(**dict(args))
    except TypeError as exc:
        raise XaimedError(f"the arguments for {name} do not fit it: {exc}.") from exc
    if not isinstance(module, torch.nn.Module):
        raise XaimedError(f"{name} built a {type(module).__name__}, not a torch.nn.Module.")
    return module


def _read_state(weights: Path) -> Any:
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise XaimedError(f"cannot read the weights {weights.name}: {exc}. Is it a state dict "
                          "saved with torch.save(model.state_dict(), path)?") from exc
    return state


def _load_state(module: torch.nn.Module, state: Any, weights: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise XaimedError(f"the weights in {weights.name} do not fit {what}: "
                          f"{str(exc).splitlines()[0]}") from exc


def _from_config(weights: Path, config: dict[str, Any], trust: bool | str, source: str,
                 expect: Mapping[str, str | None]) -> LoadedModel:
    if "network" not in config:
        raise XaimedError(f"the config beside {weights.name} needs a 'network' (a MONAI network "
                          "name or 'module:Class') and its 'args'.")
    digest = config_sha256(config)
    _expected(expect, "config_sha256", digest, weights)
    sha = file_sha256(weights)
    _expected(expect, "sha256", sha, weights)
    try:
        module = build_network(config["network"], config.get("args", {}),
                               trust=_trusts(trust, digest), source=source)
    except UntrustedModelError as exc:
        exc.config_sha256 = digest
        raise
    state = _read_state(weights)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"],
                                                                      dict):
        state = state["state_dict"]
    _load_state(module, state, weights, f"{config['network']} with these arguments")
    return LoadedModel(module.eval(), Preprocessing.from_dict(config.get("preprocessing")),
                       list(config.get("classes", [])), str(weights), sha, digest,
                       names_code(config["network"]),
                       training_inputs=config.get("training_inputs"))


def _trusts(trust: bool | str, digest: str) -> bool:
    """``trust`` as a yes or no for the config whose SHA-256 is ``digest``: a digest given as
    ``trust`` (the config the user reviewed) trusts that config only."""
    return trust == digest if isinstance(trust, str) else bool(trust)


def _expected(expect: Mapping[str, str | None], key: str, actual: str | None,
              source: Any) -> None:
    """Refuse a model whose weights (``key="sha256"``) or config (``"config_sha256"``) are no
    longer the ones ``expect`` records, before anything is built from it."""
    wanted = expect.get(key)
    if wanted and actual != wanted:
        what = "weights" if key == "sha256" else "config (the architecture and preprocessing)"
        raise XaimedError(
            f"the model file {str(source)!r} has changed since the output was computed (the "
            f"SHA-256 of its {what} differs): restore the original model, or compute the "
            "output anew.")


def _from_bundle(folder: Path, trust: bool | str, expect: Mapping[str, str | None]
                 ) -> LoadedModel:
    config_path = model_config_file(folder)
    weights = folder / "models" / "model.pt"
    if config_path is None or not weights.exists():
        raise XaimedError(f"{folder} is not a MONAI bundle: it needs configs/inference.json (or "
                          ".yaml) and models/model.pt.")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config(str(config_path))
        if "network_def" not in parser:
            raise XaimedError(f"the bundle's {config_path.name} has no network_def: it must "
                              "define the network (e.g. {\"_target_\": \"UNet\", ...}).")
        parser["bundle_root"] = str(folder)
        parser.parse(reset=True)  # reads macros' files and resolves ids; builds nothing
    except XaimedError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken config file
        raise XaimedError(f"cannot read the bundle's {config_path.name}: {exc}.") from exc
    digest = config_sha256({k: v for k, v in parser.get().items() if k != "bundle_root"})
    _expected(expect, "config_sha256", digest, folder)
    sha = file_sha256(weights)
    _expected(expect, "sha256", sha, folder)
    try:
        trusted = check_trusted(str(config_path), bundle_code(parser), _trusts(trust, digest))
    except UntrustedModelError as exc:
        exc.config_sha256 = digest
        raise
    try:
        # from the resolver directly: get_parsed_content would parse (and expand macros)
        # again, past what was checked
        module = parser.ref_resolver.get_resolved_content("network_def")
    except Exception as exc:  # noqa: BLE001
        raise XaimedError(f"the bundle's network_def cannot be built: {exc}.") from exc
    if not isinstance(module, torch.nn.Module):
        raise XaimedError(
            f"the bundle's network_def is {type(module).__name__} {module!r:.60}, not a "
            "network: it must build a torch.nn.Module, e.g. {\"_target_\": \"UNet\", ...} "
            f"in {config_path.name}.")
    state = _read_state(weights)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    _load_state(module, state, weights, "the bundle's network_def")
    return LoadedModel(module.eval(), Preprocessing(), [], str(folder), sha, digest, trusted)


def load_model(model: Any, config: dict[str, Any] | None = None, *, folds: Any = None,
               checkpoint: str = "checkpoint_final.pth", device: Any = "auto",
               trust: bool | str = False,
               expect: Mapping[str, str | None] | None = None) -> LoadedModel:
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
        Run the code a config or bundle names (``"module:Class"``, ``$`` expressions,
        ``_target_`` outside ``monai.networks.nets``). Only for files you trust: that code can
        do anything your account can. Without it such a file is refused
        (:class:`~napari_xaimed._core.errors.UntrustedModelError` names each callable and
        expression) before anything from it runs. Functions that take a model path
        (``attribute``, ``segment`` ...) load it untrusted: pass them
        ``load_model(path, trust=True)`` instead of the path. A string: the SHA-256 of the
        config whose code you reviewed (``UntrustedModelError.config_sha256``); its code runs
        only if the config is still that one, otherwise it is refused again.
    expect : dict, optional
        The ``sha256`` (weights) and ``config_sha256`` a provenance record holds: a model whose
        files changed since is refused before anything is built from it (a rerun).
        nnU-Net: a checkpoint that needs full unpickling, or a network class outside
        ``dynamic_network_architectures`` (code the folder names), is refused without it.

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
                           training_inputs=config.get("training_inputs"),
                           checked=_CHECKS.setdefault(model, {}),
                           cam_layers=_CAM_LAYERS.setdefault(model, {}))
    if model in (BUNDLED, BUNDLED_SEGMENTER):
        from napari_xaimed.models.bundled import CLASSIFIER_WEIGHTS, SEGMENTER_WEIGHTS

        loaded = load_model(CLASSIFIER_WEIGHTS if model == BUNDLED else SEGMENTER_WEIGHTS,
                            expect=expect)
        loaded.source = model
        return loaded
    path = Path(model)
    if not path.exists():
        raise XaimedError(f"model file {path} does not exist.")
    try:
        return _from_file(path, config, trust, dict(expect or {}),
                          (folds, checkpoint, device))
    except UntrustedModelError as exc:
        exc.model = str(path)  # what a widget asks the user about and loads again
        raise


def _from_file(path: Path, config: dict[str, Any] | None, trust: bool | str,
               expect: Mapping[str, str | None], nnunet: tuple[Any, str, Any]) -> LoadedModel:
    if path.is_dir():
        from napari_xaimed.models.nnunet import is_nnunet_folder, load_nnunet

        if is_nnunet_folder(path):
            return load_nnunet(path, *nnunet, bool(trust))
        return _from_bundle(path, trust, expect)
    sidecar = path.with_suffix(".json")
    source = f"the config given for {path}"
    if config is None and sidecar.exists():
        config, source = _read_sidecar(sidecar), str(sidecar)
    if config is not None and "network" in config:
        return _from_config(path, config, trust, source, expect)
    digest = None if config is None else config_sha256(config)
    _expected(expect, "config_sha256", digest, path)
    sha = file_sha256(path)
    _expected(expect, "sha256", sha, path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise XaimedError(
            f"{path.name} is neither TorchScript nor a state dict with a config: save the "
            f"model with torch.jit.save, or put a JSON beside it ({sidecar.name}) naming the "
            f"network and its arguments. ({type(exc).__name__})") from exc
    return LoadedModel(module.eval(), Preprocessing.from_dict((config or {}).get(
        "preprocessing")), list((config or {}).get("classes", [])), str(path), sha, digest)


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        config = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise XaimedError(f"{sidecar} is not valid JSON ({exc}): fix it, or move it away if "
                          "it is not the model's config.") from exc
    if not isinstance(config, dict):
        raise XaimedError(f"{sidecar} must hold a JSON object (network, args, preprocessing, "
                          f"classes), not a {type(config).__name__}.")
    return config


class Scores(torch.nn.Module):
    """The model's scores: its output, or the first element of an output tuple (MONAI's ViT
    returns ``(logits, hidden_states)``)."""

    draws_random = False  # it only calls its children (see napari_xaimed._core.rng)

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        return out
