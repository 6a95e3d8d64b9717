"""Attribution of an nnU-Net v2 segmentation, through nnU-Net's preprocessing and windows.

The volume goes through nnU-Net's own preprocessing (``PreprocessAdapterFromNpy``: transpose,
crop to non-zero, normalisation, resampling to the plans' spacing). On that grid,
:class:`SlidingLogits` is nnU-Net's sliding-window prediction written as a differentiable
module: the same padding to the patch size, the same window positions
(``_internal_get_sliding_window_slicers``), the same Gaussian weights and mirroring over the
axes the checkpoint allows, one fold's network (the first; ``fold=`` picks another). The
target is a class's summed logit inside a region: the class's predicted voxels (``target`` a
label), a drawn mask (``region`` on the image grid), or one connected structure of the
prediction (``structure=k``: the k-th largest, 26-connectivity). The method then runs as for any
segmentation model (:func:`napari_xaimed.attribution.run.attribute_steps`), and its map is
carried back as nnU-Net carries its logits: resampled to the cropped shape (nnU-Net's
probability resampling), put into the crop's box (zero outside), transposed back: on the
image's own grid, so it overlays the image in mm.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed.models.nnunet import NnUNetModel


class SlidingLogits(torch.nn.Module):
    """nnU-Net's Gaussian-weighted, mirrored sliding-window logits of one network on a
    preprocessed volume ``(1, C, z, y, x)``, with gradients."""

    def __init__(self, model: NnUNetModel, network: torch.nn.Module, mirroring: bool = True):
        super().__init__()
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        self.network = network
        self.predictor = model.predictor
        self.patch = tuple(int(p) for p in self.predictor.configuration_manager.patch_size)
        axes = self.predictor.allowed_mirroring_axes if mirroring else None
        self.mirrors = ([] if not axes else
                        [tuple(a + 2 for a in c) for i in range(len(axes))
                         for c in itertools.combinations(axes, i + 1)])
        self.register_buffer("gaussian", compute_gaussian(self.patch, sigma_scale=1. / 8,
                                                          value_scaling_factor=10,
                                                          device=torch.device("cpu")).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[2:])
        pads = [max(0, p - s) for p, s in zip(self.patch, shape, strict=True)]
        before = [p // 2 for p in pads]
        padding: list[int] = []
        for b, p in zip(reversed(before), reversed(pads), strict=True):
            padding += [b, p - b]
        padded = torch.nn.functional.pad(x, padding) if any(pads) else x
        slicers = self.predictor._internal_get_sliding_window_slicers(tuple(padded.shape[2:]))
        out = weight = None
        for sl in slicers:
            window = padded[(slice(None), *sl)]
            logits = self.network(window)
            for axes in self.mirrors:
                logits = logits + torch.flip(self.network(torch.flip(window, axes)), axes)
            logits = logits / (len(self.mirrors) + 1) * self.gaussian
            if out is None:
                out = padded.new_zeros((x.shape[0], logits.shape[1], *padded.shape[2:]))
                weight = padded.new_zeros(padded.shape[2:])
            out = _add(out, logits, sl[1:])
            weight = _add(weight, self.gaussian, sl[1:])
        out = out / weight
        crop = tuple(slice(b, b + s) for b, s in zip(before, shape, strict=True))
        return out[(slice(None), slice(None), *crop)]


def _add(base: torch.Tensor, part: torch.Tensor, where: tuple[slice, ...]) -> torch.Tensor:
    """``base`` with ``part`` added in the box ``where`` (last axes), out of place (autograd)."""
    pads: list[int] = []
    for sl, n in zip(reversed(where), reversed(base.shape[-len(where):]), strict=True):
        pads += [sl.start, n - sl.stop]
    return base + torch.nn.functional.pad(part, pads)


def _to_preprocessed(mask: np.ndarray, props: dict[str, Any], model: NnUNetModel,
                     shape: tuple[int, ...]) -> np.ndarray:
    """A mask on the image grid carried onto nnU-Net's preprocessed grid: transposed, cropped
    to nnU-Net's box, resampled (nearest) to the preprocessed shape."""
    pm = model.predictor.plans_manager
    moved = np.transpose(np.asarray(mask) != 0, pm.transpose_forward)
    box = tuple(slice(int(a), int(b)) for a, b in props["bbox_used_for_cropping"])
    cropped = torch.from_numpy(np.ascontiguousarray(moved[box])).float()[None, None]
    resized = torch.nn.functional.interpolate(cropped, size=tuple(shape), mode="nearest")
    return resized[0, 0].numpy() > 0.5


def _to_image(values: np.ndarray, props: dict[str, Any], model: NnUNetModel) -> np.ndarray:
    """A map on nnU-Net's preprocessed grid carried back onto the image grid, as nnU-Net
    carries its logits: probability resampling, the crop's box (zero outside), transpose."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    pm, conf = model.predictor.plans_manager, model.predictor.configuration_manager
    spacing_t = [props["spacing"][i] for i in pm.transpose_forward]
    resampled = conf.resampling_fn_probabilities(
        values[None].astype(np.float32), props["shape_after_cropping_and_before_resampling"],
        conf.spacing if len(conf.spacing) == 3 else [spacing_t[0], *conf.spacing], spacing_t)
    resampled = np.asarray(resampled.cpu() if isinstance(resampled, torch.Tensor)
                           else resampled)[0]
    full = np.zeros(props["shape_before_cropping"], np.float32)
    full = np.asarray(insert_crop_into_image(full, resampled, props["bbox_used_for_cropping"]))
    return np.ascontiguousarray(full.transpose(pm.transpose_backward), dtype=np.float32)


def _structure(model: NnUNetModel, volume: np.ndarray, spacing: tuple[float, ...],
               channel: int, k: int) -> Steps[tuple[np.ndarray, dict[str, Any]]]:
    """The k-th largest connected structure (26-connectivity) of class ``channel`` in
    nnU-Net's segmentation of the volume, as a mask on the image grid."""
    import cc3d

    from napari_xaimed.models.nnunet import nnunet_segmentation_steps

    labels, _, _ = yield from nnunet_segmentation_steps(volume, model, spacing)
    components = cc3d.connected_components(labels == channel, connectivity=26)
    sizes = np.bincount(components.ravel())[1:]
    if not 1 <= k <= len(sizes):
        raise XaimedError(f"structure {k} does not exist: nnU-Net's segmentation has "
                          f"{len(sizes)} connected structure(s) of class {channel}; give "
                          f"1..{len(sizes)} (1 is the largest).")
    order = np.argsort(-sizes, kind="stable")
    mask = components == int(order[k - 1]) + 1
    voxels = int(mask.sum())
    return mask, {"structure": k, "structure_voxels": voxels,
                  "structure_mm3": float(voxels * np.prod(spacing))}


def nnunet_attribute_steps(model: NnUNetModel, volume: np.ndarray, method: str, *,
                           target: int | None = None, region: np.ndarray | None = None,
                           structure: int | None = None, fold: int = 0, mirroring: bool = True,
                           spacing: Any = None, preprocessing: Any = None,
                           run_module: Callable[..., Steps[Any]], **kwargs: Any) -> Steps[Any]:
    """Attribution of an nnU-Net model's segmentation (see the module docstring): the method
    runs through ``run_module`` (:func:`~napari_xaimed.attribution.run.attribute_steps`, which
    calls this and passes itself) on nnU-Net's differentiable windows, with the other keyword
    arguments."""
    import copy

    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

    from napari_xaimed._core.validate import as_spacing, as_volume
    from napari_xaimed.attribution.methods import CAM_LAYER_METHODS

    if preprocessing is not None:
        raise XaimedError("an nnU-Net model is explained through nnU-Net's own preprocessing "
                          "(its plans' normalisation and spacing): leave preprocessing out.")
    if region is not None and structure is not None:
        raise XaimedError("give a region or a structure, not both.")
    volume = as_volume(volume, "volume")
    spacing = as_spacing(spacing)
    predictor = model.predictor
    n_out = predictor.label_manager.num_segmentation_heads
    channel = 1 if target is None else int(target)
    if not 0 <= channel < n_out:
        raise XaimedError(f"target {channel} does not exist: the model has classes "
                          f"0..{n_out - 1} ({', '.join(model.classes)}).")
    if not 0 <= fold < len(model.folds):
        raise XaimedError(f"fold index {fold} does not exist: the model ensembles "
                          f"{len(model.folds)} fold(s) {model.folds}; give "
                          f"0..{len(model.folds) - 1}.")
    facts: dict[str, Any] = {}
    if structure is not None:
        region, facts = yield from _structure(model, volume, spacing, channel, int(structure))
    elif region is not None and np.shape(region) != volume.shape:
        raise XaimedError(f"the region {np.shape(region)} must have the volume's shape "
                          f"{volume.shape}.")
    yield Progress(0, 1, "nnU-Net preprocessing")
    prepared = next(PreprocessAdapterFromNpy(
        [np.ascontiguousarray(volume, dtype=np.float32)[None]], [None],
        [{"spacing": [float(s) for s in spacing]}], [None], predictor.plans_manager,
        predictor.dataset_json, predictor.configuration_manager,
        num_threads_in_multithreaded=1, verbose=False))
    data, props = prepared["data"], prepared["data_properties"]
    grid = tuple(int(n) for n in data.shape[1:])
    pre_region = None
    if region is not None:
        pre_region = _to_preprocessed(region, props, model, grid)
        if not pre_region.any():
            raise XaimedError("the region lies outside the part of the image nnU-Net keeps "
                              "(its crop to non-zero voxels) or is empty: draw it on the "
                              "anatomy.")
    # a private copy with the fold's weights: the predictor's network holds whichever fold ran
    # last, and nnU-Net's in-place activations would break hook-based methods
    network = copy.deepcopy(model.module)
    network.load_state_dict(predictor.list_of_parameters[fold])
    for sub in network.modules():
        if hasattr(sub, "inplace"):
            sub.inplace = False
    sliding = SlidingLogits(model, network.eval(), mirroring=mirroring)
    if method in CAM_LAYER_METHODS:
        padded = [max(g, p) for g, p in zip(grid, sliding.patch, strict=True)]
        calls = len(predictor._internal_get_sliding_window_slicers(tuple(padded))) * (
            len(sliding.mirrors) + 1)
        if calls > 1:
            raise XaimedError(
                f"{method} needs one feature map of a layer over the whole input, but "
                f"nnU-Net's prediction runs the network {calls} times here (windows of "
                f"{sliding.patch} on the preprocessed {grid} grid"
                f"{', mirrored' if sliding.mirrors else ''}), each with its own map. Use a "
                "gradient method (saliency, integrated_gradients, smoothgrad), or pass "
                "mirroring=False on an image whose preprocessed grid fits one patch.")
    target_spacing = [float(s) for s in predictor.configuration_manager.spacing]
    result = yield from run_module(sliding, data[0].numpy(), method, target=channel,
                                        region=pre_region, spacing=target_spacing, **kwargs)
    result.map = _to_image(result.map, props, model)
    result.params = {**result.params, **facts,
                     "nnunet": {"fold": model.folds[fold], "mirroring": bool(mirroring),
                                "target_spacing": target_spacing,
                                "preprocessed_shape": list(grid),
                                "class": model.classes[channel] if channel < len(model.classes)
                                else channel},
                     "region": ("structure" if structure is not None else
                                "given mask" if region is not None else "model prediction")}
    result.model = model.provenance()
    return result
