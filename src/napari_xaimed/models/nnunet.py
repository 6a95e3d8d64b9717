"""Trained nnU-Net v2 result folders, loaded and run through nnU-Net's own code.

A result folder (``.../DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres``) holds
``plans.json``, ``dataset.json`` and ``fold_k/checkpoint_final.pth`` (or
``checkpoint_best.pth``). :func:`load_nnunet` builds an ``nnUNetPredictor`` from it as
``nnUNetPredictor.initialize_from_trained_model_folder`` does, with two differences that only
touch how files are read:

- checkpoints are read with ``torch.load(weights_only=True)`` (numpy's scalar and dtype let
  through for the training log), so unpickling runs no code; a checkpoint that needs more is
  refused unless ``trust=True``;
- the network class named in ``plans.json`` (a dotted import path) and the classes its
  arguments name must come from ``dynamic_network_architectures`` and ``torch.nn``; any other
  module would be imported and run, so it is refused unless ``trust=True``.

What loading executes: nnU-Net's trainer class named in the checkpoint (searched only inside
the installed ``nnunetv2`` package; a custom trainer missing from it cannot load) builds the
network from the plans (its ``build_network_architecture``), and the classes above are
imported. Segmentation then runs nnU-Net's preprocessing (transpose, crop to non-zero,
per-channel normalisation scheme, resampling to the plans' spacing), its sliding-window
prediction (Gaussian weighting, tile step 0.5, mirroring over the axes the checkpoint allows),
the average over folds, and the resampling of the logits back to the image: labels identical to
``nnUNetPredictor``'s on the same array and spacing.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import UntrustedModelError, XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed._core.provenance import file_sha256
from napari_xaimed.models.loaded import LoadedModel

INSTALL = ('pip install "napari-xaimed[nnunet-cpu]" && pip install --no-deps '
           'nnunetv2==2.8.1 dynamic-network-architectures==0.4.4')
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")
# modules whose classes plans.json may name without trust=True
TRUSTED_MODULES = ("dynamic_network_architectures.", "torch.nn.")
REPORT_INTERVAL_S = 0.05


def is_nnunet_folder(path: Path) -> bool:
    """Whether ``path`` looks like an nnU-Net result (a plans file, dataset.json or folds)."""
    return path.is_dir() and (any((path / n).exists() for n in ("plans.json", "plans.pkl",
                                                               "dataset.json"))
                              or any(path.glob("fold_*")))


def _require_nnunet() -> None:
    try:
        import nnunetv2  # noqa: F401
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor  # noqa: F401
    except ImportError as exc:
        raise XaimedError(
            f"loading an nnU-Net result folder needs nnunetv2, which is not installed ({exc}). "
            f"Install it with: {INSTALL} (on a CUDA machine, plain `pip install "
            "napari-xaimed[nnunet]` works too; on a CPU-only torch it would replace torch).") \
            from exc


def _load_checkpoint(path: Path, trust: bool) -> dict[str, Any]:
    # the training log holds numpy scalars: their reconstructor and dtypes, nothing else
    globals_ = [np.dtype, *(type(np.dtype(t)) for t in (np.float32, np.float64, np.int64))]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    globals_.append(scalar)
    try:
        with torch.serialization.safe_globals(globals_):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        if not trust:  # an UntrustedModelError: the widget asks, as for other models
            raise UntrustedModelError(str(path), [
                "objects that unpickling would construct by running code (it cannot be read "
                f"as weights only: {str(exc).splitlines()[0][:300]})"]) from exc
    return torch.load(path, map_location="cpu", weights_only=False)


def _check_trusted(name: str, what: str, trust: bool) -> None:
    if not trust and not name.startswith(TRUSTED_MODULES):
        raise UntrustedModelError("plans.json", [
            f"{what} {name!r}, outside dynamic_network_architectures and torch.nn (loading "
            "would import and run its module)"])


def _folds(folder: Path, folds: Sequence[int | str] | int | str | None,
           checkpoint: str) -> list[int | str]:
    present = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
    if folds is None:
        chosen: list[int | str] = sorted(int(p[5:]) for p in present
                                         if p[5:].isdigit() and (folder / p / checkpoint).exists())
        if not chosen:
            raise XaimedError(
                f"{folder} has no fold_k/{checkpoint} (folds present: "
                f"{', '.join(present) or 'none'}); name the checkpoint (one of "
                f"{', '.join(CHECKPOINTS)}) or train a fold.")
        return chosen
    chosen = [folds] if isinstance(folds, int | str) else list(folds)
    for f in chosen:
        sub = folder / f"fold_{f}"
        if not sub.is_dir():
            raise XaimedError(f"fold {f} does not exist in {folder}: the folds present are "
                              f"{', '.join(present) or 'none'}.")
        if not (sub / checkpoint).exists():
            have = sorted(p.name for p in sub.glob("checkpoint*.pth"))
            raise XaimedError(f"fold {f} has no {checkpoint} (it has: "
                              f"{', '.join(have) or 'no checkpoint'}); pass checkpoint= one of "
                              "those.")
    return chosen


@dataclass
class NnUNetModel(LoadedModel):
    """An nnU-Net v2 model ready to segment and explain.

    Attributes (besides :class:`LoadedModel`'s)
    -------------------------------------------
    predictor : nnunetv2.inference.predict_from_raw_data.nnUNetPredictor
        Initialised with the folds' weights; ``module`` is its network (first fold's weights).
    folder : str
    folds : list
    checkpoint : str
    labels : dict
        ``dataset.json``'s label names and values.
    """

    predictor: Any = None
    folder: str = ""
    folds: list[Any] = field(default_factory=list)
    checkpoint: str = ""
    labels: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "kind": "nnU-Net v2", "folds": self.folds,
                "checkpoint": self.checkpoint, "trainer": self.predictor.trainer_name}


def load_nnunet(folder: str | Path, folds: Sequence[int | str] | int | str | None = None,
                checkpoint: str = "checkpoint_final.pth", device: str | torch.device = "auto",
                trust: bool = False) -> NnUNetModel:
    """Load a trained nnU-Net v2 result folder (see the module docstring).

    Parameters
    ----------
    folder : str or pathlib.Path
        ``.../DatasetXXX_Name/<trainer>__<plans>__<configuration>``.
    folds : int, str or sequence, optional
        Folds to ensemble (``0``, ``[0, 1]``, ``"all"``); default: every ``fold_<number>`` that
        has ``checkpoint``, as nnU-Net picks them.
    checkpoint : str
        ``"checkpoint_final.pth"`` or ``"checkpoint_best.pth"``.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` ...
    trust : bool
        Allow checkpoints that need full unpickling and network classes outside
        ``dynamic_network_architectures`` (both run code named by the files).

    Returns
    -------
    NnUNetModel
    """
    from napari_xaimed.models.device import pick_device

    folder = Path(folder)
    if (folder / "plans.pkl").exists() or any(folder.glob("fold_*/model_final_checkpoint.model")):
        raise XaimedError(f"{folder} is an nnU-Net v1 result (plans.pkl, *.model checkpoints): "
                          "napari-xaimed reads nnU-Net v2 results; convert the dataset and "
                          "retrain with nnU-Net v2 (nnUNetv2_convert_old_nnUNet_dataset).")
    missing = [n for n in ("plans.json", "dataset.json") if not (folder / n).exists()]
    if missing:
        raise XaimedError(f"{folder} is not an nnU-Net v2 result folder: {' and '.join(missing)} "
                          "missing. Point to the folder nnU-Net trained into, e.g. nnUNet_results/"
                          "DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres, which holds "
                          "plans.json, dataset.json and fold_k/checkpoint_final.pth.")
    chosen = _folds(folder, folds, checkpoint)
    _require_nnunet()
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    parameters, first = [], None
    for f in chosen:
        path = folder / f"fold_{f}" / checkpoint
        ckpt = _load_checkpoint(path, trust)
        if not isinstance(ckpt, dict) or not {"network_weights", "trainer_name",
                                              "init_args"} <= set(ckpt):
            keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise XaimedError(f"{path} is not an nnU-Net v2 checkpoint (it has {keys}, not "
                              "network_weights, trainer_name and init_args): a checkpoint of "
                              "another nnU-Net version or another tool; retrain with nnU-Net v2.")
        first = first or ckpt
        parameters.append(ckpt["network_weights"])
    configuration = first["init_args"]["configuration"]
    try:
        conf = plans_manager.get_configuration(configuration)
    except Exception as exc:  # noqa: BLE001
        raise XaimedError(f"plans.json has no configuration {configuration!r}, which the "
                          "checkpoint was trained with.") from exc
    _check_trusted(conf.network_arch_class_name, "the network class", trust)
    for key in conf.network_arch_init_kwargs_req_import:
        value = conf.network_arch_init_kwargs.get(key)
        if value is not None:
            _check_trusted(str(value), f"for {key!r} the class", trust)
    trainer = recursive_find_trainer_class_by_name(first["trainer_name"])
    if trainer is None:
        raise XaimedError(f"the checkpoint was trained with {first['trainer_name']!r}, a trainer "
                          "that the installed nnunetv2 does not have: install the package that "
                          "defines it (nnU-Net rebuilds the network through that class).")
    n_in = determine_num_input_channels(plans_manager, conf, dataset_json)
    label_manager = plans_manager.get_label_manager(dataset_json)
    network = trainer.build_network_architecture(
        plans_manager, conf, n_in, label_manager.num_segmentation_heads,
        enable_deep_supervision=False)
    try:
        network.load_state_dict(parameters[0])
    except RuntimeError as exc:
        raise XaimedError(f"the weights of fold {chosen[0]} do not fit the network that "
                          f"plans.json describes: {str(exc).splitlines()[0]}") from exc
    dev = pick_device(device)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints about CPU devices
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=dev.type == "cuda",
                                    device=dev, verbose=False, allow_tqdm=False)
        predictor.manual_initialization(network, plans_manager, conf, parameters, dataset_json,
                                        first["trainer_name"],
                                        first.get("inference_allowed_mirroring_axes"))
    labels = dict(dataset_json.get("labels", {}))
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: _order(kv[1]))]
    return NnUNetModel(network.eval(), classes=classes, source=str(folder),
                       sha256=file_sha256(folder / f"fold_{chosen[0]}" / checkpoint),
                       predictor=predictor, folder=str(folder), folds=chosen,
                       checkpoint=checkpoint, labels=labels)


def _order(value: Any) -> float:
    return float(value if isinstance(value, int | float) else max(value))


def _forward_passes(model: NnUNetModel, shape: Sequence[int], spacing: Sequence[float]) -> int:
    """Forward passes nnU-Net will run on a volume (before cropping to non-zero): windows x
    mirrorings x folds."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    conf, pm = model.predictor.configuration_manager, model.predictor.plans_manager
    spacing_t = [spacing[i] for i in pm.transpose_forward]
    shape_t = [shape[i] for i in pm.transpose_forward]
    target = conf.spacing if len(conf.spacing) == 3 else [spacing_t[0], *conf.spacing]
    new = [max(int(round(n * s / t)), p)
           for n, s, t, p in zip(shape_t, spacing_t, target, conf.patch_size, strict=True)]
    windows = int(np.prod([len(s) for s in compute_steps_for_sliding_window(
        new, conf.patch_size, model.predictor.tile_step_size)]))
    axes = model.predictor.allowed_mirroring_axes if model.predictor.use_mirroring else None
    return windows * (2 ** len(axes) if axes else 1) * len(model.folds)


def nnunet_segmentation_steps(volume: np.ndarray, model: NnUNetModel, spacing: Sequence[float],
                              ) -> Steps[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """nnU-Net's prediction of ``volume`` (``(z, y, x)``, spacing in mm) as a step generator
    (progress per forward pass; closing it stops the windows). Returns ``(labels,
    foreground probability, facts)`` on the volume's grid; the labels are those
    ``nnUNetPredictor.predict_single_npy_array`` returns for the same array and spacing."""
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

    from napari_xaimed._core.stepped import stepped

    started = time.perf_counter()
    predictor = model.predictor
    total = _forward_passes(model, volume.shape, spacing)
    yield Progress(0, total + 2, "nnU-Net preprocessing")
    image = np.ascontiguousarray(volume, dtype=np.float32)[None]
    properties = {"spacing": [float(s) for s in spacing]}
    adapter = PreprocessAdapterFromNpy([image], [None], [properties], [None],
                                       predictor.plans_manager, predictor.dataset_json,
                                       predictor.configuration_manager,
                                       num_threads_in_multithreaded=1, verbose=False)
    prepared = next(adapter)
    network = predictor.network

    def call(forward: Any) -> torch.Tensor:
        network.forward = forward  # nnU-Net calls network(x): count each pass
        try:
            return predictor.predict_logits_from_preprocessed_data(prepared["data"]).cpu()
        finally:
            del network.forward

    def report(done: int) -> Progress:
        return Progress(1 + done, total + 2, f"nnU-Net forward pass {done} of {total}")

    logits = yield from stepped(call, type(network).forward.__get__(network), total,
                                "forward passes", interval_s=REPORT_INTERVAL_S, report=report)
    yield Progress(total + 1, total + 2, "resampling to the image")
    labels, probability = _to_image(model, logits, prepared["data_properties"])
    facts = {"windows": total, "seconds_nnunet": time.perf_counter() - started,
             "preprocessed_shape": list(prepared["data"].shape[1:]),
             "target_spacing": list(predictor.configuration_manager.spacing)}
    return labels, probability, facts


def _to_image(model: NnUNetModel, logits: torch.Tensor, props: dict[str, Any]
              ) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``, with the
    resampled logits kept once for both the labels (its default, logit-argmax path) and the
    foreground probability."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
    from nnunetv2.configuration import default_num_processes

    predictor = model.predictor
    pm, conf, lm = predictor.plans_manager, predictor.configuration_manager, \
        predictor.label_manager
    old_threads = torch.get_num_threads()
    torch.set_num_threads(default_num_processes)
    try:
        spacing_t = [props["spacing"][i] for i in pm.transpose_forward]
        current = conf.spacing if len(conf.spacing) == len(
            props["shape_after_cropping_and_before_resampling"]) else [spacing_t[0],
                                                                       *conf.spacing]
        logits = conf.resampling_fn_probabilities(
            logits, props["shape_after_cropping_and_before_resampling"], current, spacing_t)
        seg = lm.convert_logits_to_segmentation(logits)
        labels = np.zeros(props["shape_before_cropping"],
                          dtype=np.uint8 if len(lm.foreground_labels) < 255 else np.uint16)
        labels = insert_crop_into_image(labels, seg, props["bbox_used_for_cropping"])
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        labels = labels.transpose(pm.transpose_backward)
        probs = lm.apply_inference_nonlin(logits)
        foreground = probs.max(0).values if lm.has_regions else 1.0 - probs[0]
        full = np.zeros(props["shape_before_cropping"], np.float32)
        full = insert_crop_into_image(full, foreground.float().cpu().numpy(),
                                      props["bbox_used_for_cropping"])
        return labels, np.asarray(full).transpose(pm.transpose_backward)
    finally:
        torch.set_num_threads(old_threads)
