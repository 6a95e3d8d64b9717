"""Longitudinal explanations: how a model's evidence changed between a prior and a current scan.

:func:`explain_change` registers the prior (moving) to the current scan (fixed), or takes a
registration already made (a :class:`~napari_xaimed.registration.RegistrationResult` or a
displacement field in the package convention), explains both scans with one attribution
method for one target, carries the prior's heatmap onto the current grid with the same
transform and subtracts it: the **change** map. Both heatmaps are also compared after scaling
each by its own largest magnitude (the **normalised change**), which reads a shift of the
evidence apart from a change of the model's confidence.

At the feature level, the image-level displacement is resampled onto the grid of a layer's
feature maps (:func:`feature_grid`, :func:`field_on_grid`: millimetres stay millimetres; the
feature grid's voxel size is the image's times the layer's shrink factor), the prior's feature
maps are warped onto the current's feature grid (:func:`warp_features`), and their difference is
explained Grad-CAM-style: the channel weights are the spatial means of the gradients of the
current's score, times (current features - warped prior features), summed over channels and
upsampled to the current grid. The layer is the Grad-CAM default (the model's last spatial
feature map) unless one is named. Everything lies on the current grid, ``(z, y, x)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.validate import as_origin, as_spacing, as_volume
from napari_xaimed.attribution.methods import METHODS
from napari_xaimed.attribution.run import Attribution, attribute_steps
from napari_xaimed.io.grid import Grid, grid_difference
from napari_xaimed.longitudinal.features import (  # noqa: F401 - also importable from here, as before
    Vec3,
    _feature_change,
    feature_grid,
    field_on_grid,
    warp_features,
)
from napari_xaimed.longitudinal.lazy import MAX_VOXELS, coarse_copies
from napari_xaimed.models.device import pick_device
from napari_xaimed.models.loading import load_model
from napari_xaimed.models.preprocess import Preprocessing
from napari_xaimed.registration.fields import resample


@dataclass
class LongitudinalResult:
    """Heatmaps of a prior and a current scan, their change, and how they were made.

    Every map is float32 on the current scan's grid (``spacing``, ``origin``) except
    ``prior``, which lies on the prior's.

    Attributes
    ----------
    prior, current : numpy.ndarray
        The method's heatmap of each scan, for the same target.
    carried_prior : numpy.ndarray
        ``prior`` carried onto the current grid through ``displacement`` (linear, 0 outside).
    change : numpy.ndarray
        ``current - carried_prior``: positive where the current scan holds more evidence.
    change_normalised : numpy.ndarray
        ``current / max|current| - carried_prior / max|prior|``.
    feature_change : numpy.ndarray
        Grad-CAM-style map of the feature difference: the channel weights (spatial mean of the
        current score's gradient) times current features minus warped prior features, summed
        over channels and upsampled to the current grid (signed).
    channel_change : numpy.ndarray
        ``(channels,)`` L2 norm over the feature grid of each channel's difference.
    channel_weights : numpy.ndarray
        ``(channels,)`` the Grad-CAM weight of each channel.
    displacement : numpy.ndarray or None
        ``(z, y, x, 3)`` mm on the current grid, pull-back (the field used); None for
        ``registration="identity"``.
    feature_displacement : numpy.ndarray
        The same field on the current feature grid (mm).
    spacing, origin, prior_spacing, prior_origin : tuple of float
        Grids of the current and prior scans (mm).
    feature_spacing, feature_origin : tuple of float
        The current feature grid (mm).
    method, layer : str
        Attribution method and the feature layer.
    target : int or None
        The explained class (or segmentation channel), the same for both scans.
    signed : bool
        Whether the method's own maps are signed (the change maps always are).
    scores : dict
        ``{"prior": [...], "current": [...]}`` the model's outputs.
    registration : RegistrationResult or None
        The registration run or given (None for a bare field).
    params : dict
        Provenance: method parameters, layer, target, registration parameters and quality,
        preprocessing, model source and SHA-256, device.
    seconds : float
    """

    prior: np.ndarray
    carried_prior: np.ndarray
    current: np.ndarray
    change: np.ndarray
    change_normalised: np.ndarray
    feature_change: np.ndarray
    channel_change: np.ndarray
    channel_weights: np.ndarray
    displacement: np.ndarray | None
    feature_displacement: np.ndarray
    spacing: Vec3
    origin: Vec3
    prior_spacing: Vec3
    prior_origin: Vec3
    feature_spacing: Vec3
    feature_origin: Vec3
    method: str
    layer: str
    target: int | None
    signed: bool
    scores: dict[str, list[float]] = field(default_factory=dict)
    registration: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Provenance and summary figures (no arrays)."""
        order = np.argsort(-np.abs(self.channel_weights * self.channel_change))
        return {**self.params, "method": self.method, "layer": self.layer,
                "target": self.target, "scores": self.scores, "seconds": self.seconds,
                "spacing": self.spacing, "origin": self.origin,
                "feature_spacing": self.feature_spacing, "feature_origin": self.feature_origin,
                "top_channels": [int(i) for i in order[:10]]}


def _registration_geometry(registration: Any, current: np.ndarray, prior: np.ndarray,
                           given: dict[str, Any]) -> dict[str, Any]:
    """Displacement and grids of a given registration, checked against the scans."""
    from napari_xaimed.registration import RegistrationResult

    if isinstance(registration, RegistrationResult):
        if tuple(registration.displacement.shape[:3]) != current.shape:
            raise XaimedError(
                f"the registration's fixed grid {registration.displacement.shape[:3]} is not the "
                f"current scan's {current.shape}: register the prior (moving) to this current "
                "scan (fixed).")
        if tuple(registration.moving_shape) != prior.shape:
            raise XaimedError(
                f"the registration's moving image had shape {registration.moving_shape}, the "
                f"prior scan {prior.shape}: register this prior (moving) to the current scan.")
        for scan, prefix, image in (("current", "", "fixed"), ("prior", "prior_", "moving")):
            spacing, origin = given[f"{prefix}spacing"], given[f"{prefix}origin"]
            if spacing is None and origin is None:
                continue
            registered = (getattr(registration, f"{image}_spacing"),
                          getattr(registration, f"{image}_origin"))
            shape = current.shape if scan == "current" else prior.shape
            problem = grid_difference(
                Grid(shape, *registered, name=f"the registration's {image} image"),
                Grid(shape, registered[0] if spacing is None else as_spacing(spacing),
                     registered[1] if origin is None else as_origin(origin),
                     name=f"the {scan} scan ({prefix}spacing, {prefix}origin)"))
            if problem is not None:
                raise XaimedError(f"the {scan} scan's grid differs from the registration's "
                                  f"{image} grid: {problem} Or leave {prefix}spacing and "
                                  f"{prefix}origin out, or register again on this grid.")
        return {"displacement": registration.displacement,
                "spacing": registration.fixed_spacing, "origin": registration.fixed_origin,
                "prior_spacing": registration.moving_spacing,
                "prior_origin": registration.moving_origin, "registration": registration,
                "params": {"source": "given registration", **registration.to_dict()}}
    arr = np.asarray(registration)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[:3] != current.shape:
        raise XaimedError(
            f"the displacement field has shape {arr.shape}; it must be (z, y, x, 3) on the "
            f"current scan's grid, {(*current.shape, 3)} (mm, pull-back: the current voxel p "
            "comes from the prior at p + u(p)). Register the prior to the current scan, or "
            "pass registration=None to run the registration.")
    if not np.isfinite(arr).all():
        raise XaimedError("the displacement field holds NaN or infinite values: use a field "
                          "from a registration that converged, or pass registration=None.")
    return {**_grids(given), "displacement": arr, "registration": None,
            "params": {"source": "given displacement field"}}


def _grids(given: dict[str, Any]) -> dict[str, Vec3]:
    """The scans' spacings and origins as given (the prior's spacing defaults to the
    current's)."""
    spacing = as_spacing(given["spacing"], "spacing")
    prior_spacing = given["prior_spacing"] if given["prior_spacing"] is not None else spacing
    return {"spacing": spacing, "origin": as_origin(given["origin"], "origin"),
            "prior_spacing": as_spacing(prior_spacing, "prior_spacing"),
            "prior_origin": as_origin(given["prior_origin"], "prior_origin")}


def _scaled(array: np.ndarray, by: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(by)))
    return array / peak if peak > 0 else np.zeros_like(array)


def explain_change_steps(
    prior: np.ndarray,
    current: np.ndarray,
    model: Any,
    *,
    method: str = "gradcam",
    spacing: Any = None,
    prior_spacing: Any = None,
    origin: Any = None,
    prior_origin: Any = None,
    registration: Any = None,
    transform: str = "SyN",
    registration_params: dict[str, Any] | None = None,
    seed: int | None = 0,
    target: int | None = None,
    layer: str | None = None,
    device: str | torch.device = "auto",
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    max_voxels: int = MAX_VOXELS,
    **params: Any,
) -> Steps[LongitudinalResult]:
    """Generator form of :func:`explain_change` (yields progress, returns the result)."""
    started = time.perf_counter()
    coarse = None
    if is_lazy(prior) or is_lazy(current):  # larger than memory: block-mean copies
        yield Progress(0, 1, "reading downsampled copies of the scans")
        prior, current, grids, coarse = coarse_copies(
            prior, current, spacing=spacing, origin=origin, prior_spacing=prior_spacing,
            prior_origin=prior_origin, registration=registration, max_voxels=max_voxels)
        spacing, origin = grids["spacing"], grids["origin"]
        prior_spacing, prior_origin = grids["prior_spacing"], grids["prior_origin"]
    prior = as_volume(prior, "prior scan")
    current = as_volume(current, "current scan")
    if method not in METHODS:
        raise XaimedError(f"unknown method {method!r}: choose from {', '.join(METHODS)}.")
    if layer is not None and "layer" in METHODS[method].params:
        params = {**params, "layer": layer}
    given = {"spacing": spacing, "origin": origin, "prior_spacing": prior_spacing,
             "prior_origin": prior_origin}
    if isinstance(registration, str):
        if registration != "identity":
            raise XaimedError(f"registration must be None (register now), 'identity' (the "
                              f"scans are aligned in world coordinates), a RegistrationResult "
                              f"or a displacement field, got {registration!r}.")
        identity = True
    else:
        identity = False
    parts = 4 if registration is None and not identity else 3
    if identity:  # no field at all: a CT-sized zero field would take a gigabyte
        geometry = {**_grids(given), "displacement": None, "registration": None,
                    "params": {"source": "identity (aligned in world coordinates)"}}
    elif registration is None:
        from napari_xaimed.registration import register_steps

        p_sp = prior_spacing if prior_spacing is not None else spacing
        result = yield from within(register_steps(
            current, prior, fixed_spacing=spacing, moving_spacing=p_sp, fixed_origin=origin,
            moving_origin=prior_origin, transform=transform, seed=seed,
            **(registration_params or {})), 0, parts, "registering: ")
        geometry = _registration_geometry(result, current, prior, dict.fromkeys(given))
        geometry["params"]["source"] = "registered here"
    else:
        geometry = _registration_geometry(registration, current, prior, given)
    loaded = load_model(model)
    prep = loaded.preprocessing.overridden(preprocessing)
    dev = pick_device(device)
    first = parts - 3
    now: Attribution = yield from within(attribute_steps(
        loaded, current, method, target=target, device=dev, preprocessing=prep, seed=seed or 0,
        spacing=geometry["spacing"], **params), first, parts, "current scan: ")
    before: Attribution = yield from within(attribute_steps(
        loaded, prior, method, target=now.target, device=dev, preprocessing=prep,
        seed=seed or 0, spacing=geometry["prior_spacing"], **params), first + 1, parts,
        "prior scan: ")
    yield Progress(first + 2, parts, "carrying the prior's heatmap; feature alignment")
    carried = resample(before.map, current.shape, geometry["displacement"],
                       fixed_spacing=geometry["spacing"], fixed_origin=geometry["origin"],
                       moving_spacing=geometry["prior_spacing"],
                       moving_origin=geometry["prior_origin"], interpolation="linear")
    features = _feature_change(loaded, prep, dev, prior, current,
                               layer if layer is not None else now.params.get("layer"),
                               now.target, geometry)
    yield Progress(parts, parts, "done")
    provenance = {
        "method_params": {k: v for k, v in now.params.items() if k != "preprocessing"},
        "preprocessing": prep.to_dict(), "model": now.model, "device": now.device,
        "registration": geometry["params"], "layer_choice": "given" if layer else "default: "
        "the model's last spatial feature map", "feature_shape": features["feature_shape"],
    }
    if coarse is not None:
        provenance["lazy"] = coarse
    return LongitudinalResult(
        prior=before.map, carried_prior=carried, current=now.map,
        change=(now.map - carried).astype(np.float32),
        change_normalised=(_scaled(now.map, now.map) - _scaled(carried, before.map)
                           ).astype(np.float32),
        feature_change=features["map"], channel_change=features["channel_change"],
        channel_weights=features["weights"],
        displacement=(None if geometry["displacement"] is None
                      else np.asarray(geometry["displacement"], np.float32)),
        feature_displacement=features["field"], spacing=geometry["spacing"],
        origin=geometry["origin"], prior_spacing=geometry["prior_spacing"],
        prior_origin=geometry["prior_origin"], feature_spacing=features["spacing"],
        feature_origin=features["origin"], method=method, layer=features["layer"],
        target=now.target, signed=now.signed,
        scores={"prior": before.scores, "current": now.scores},
        registration=geometry["registration"], params=provenance,
        seconds=time.perf_counter() - started)


def explain_change(prior: np.ndarray, current: np.ndarray, model: Any,
                   **kwargs: Any) -> LongitudinalResult:
    """Explain how ``model``'s evidence changed from a ``prior`` to a ``current`` scan.

    Parameters
    ----------
    prior, current : numpy.ndarray or dask.array.Array
        3D ``(z, y, x)`` scans; the prior is the moving image, the current one the fixed. If
        either is a dask array (larger than memory), both are explained on block-mean copies
        of at most ``max_voxels`` voxels (default 2**21), read slab by slab: the result lies
        on the coarse current grid (its ``spacing``/``origin``), ``params["lazy"]`` records
        the factors, and ``registration`` must be None or ``"identity"``.
    model : torch.nn.Module, path, LoadedModel or "bundled"
        See :func:`~napari_xaimed.attribution.load_model`.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS` (default ``"gradcam"``).
    spacing, prior_spacing : tuple of float, optional
        Voxel sizes in mm (``prior_spacing`` defaults to ``spacing``; 1 mm when omitted).
    origin, prior_origin : tuple of float, optional
        World position (mm) of voxel ``(0, 0, 0)`` of each scan.
    registration : None, "identity", RegistrationResult or numpy.ndarray
        None: register the prior to the current scan with
        :func:`~napari_xaimed.registration.register` (ANTs in a spawned process) using
        ``transform``, ``seed`` and ``registration_params``. ``"identity"``: the scans are
        already aligned in world coordinates (a zero field). A result of
        :func:`~napari_xaimed.registration.register`, or a ``(z, y, x, 3)`` displacement
        field (mm, pull-back, on the current grid), is used as given.
    transform : str
        ANTs transform when registering (default ``"SyN"``).
    registration_params : dict, optional
        Tuning for :func:`~napari_xaimed.registration.register` (``iterations`` ...).
    seed : int or None
        Registration seed (reproducible single-threaded ANTs) and the methods' noise seed.
    target : int, optional
        Class (or segmentation channel) to explain in both scans; default: the one the model
        predicts on the current scan.
    layer : str, optional
        The feature layer (and Grad-CAM's layer); default the model's last spatial feature
        map.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    preprocessing : dict, optional
        Overrides of the model's ``scaling``, ``window``, ``input_size``.
    **params
        The method's parameters (see :func:`~napari_xaimed.attribution.attribute`).

    Returns
    -------
    LongitudinalResult

    Examples
    --------
    >>> from napari_xaimed import samples
    >>> pair = samples.longitudinal_pair(new_lesion_radius_mm=6.0)
    >>> res = explain_change(pair.moving, pair.fixed, "bundled", spacing=pair.spacing,
    ...                      registration=pair.displacement, device="cpu")
    >>> res.change.shape == pair.fixed.shape
    True
    """
    return run_steps(explain_change_steps(prior, current, model, **kwargs))
