"""Recomputing one recorded output from its provenance: segmentation, evaluation, registration,
attribution, longitudinal explanation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cli.rerun_inputs import (
    REGISTRATION_EXTRAS,
    _need,
    _sample_data,
    recorded_inputs,
    resolve_input,
)


def accepted(func: Any, params: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The provenance parameters ``func`` takes (keyword names, or ``extra`` for its
    ``**params``); the others are facts recorded beside them."""
    names = set(inspect.signature(func).parameters) | set(extra)
    return {k: v for k, v in params.items() if k in names}


def as_tuples(params: dict[str, Any]) -> dict[str, Any]:
    """JSON turned tuples into lists; the functions take either, but keep sizes as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _segmentation(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.models.recorded import recorded_model
    from napari_xaimed.segmentation import segment_steps
    from napari_xaimed.segmentation.run import method_params

    (image,) = _need(inputs, "image")
    params = dict(prov["params"])
    method = params.pop("method")
    kwargs = {k: v for k, v in params.items()
              if k in method_params(method) and k not in ("mask", "trust")}
    if method == "model":  # loaded here: unchanged, and its code run only with trust
        kwargs["model"] = recorded_model((prov.get("facts") or {}).get("model"), trust,
                                         kwargs.get("model"))
    if "mask" in inputs:
        kwargs["mask"] = inputs["mask"].data
    elif params.get("mask") is not None:
        _need(inputs, "mask")
    result = run_steps(segment_steps(image.data, method, spacing=image.spacing,
                                     **as_tuples(kwargs)))
    if prov["kind"] == "class probability":
        return result.probabilities[int(prov["class"]) - 1]
    if prov["kind"] == "foreground probability":
        return result.probabilities[0]
    return result.labels


def _evaluation(prov: dict[str, Any], inputs: dict[str, Any]) -> np.ndarray:
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.evaluation.errors import class_layers

    reference, prediction = _need(inputs, "reference", "prediction")
    result = evaluate(reference.data, prediction.data, spacing=reference.spacing,
                      keep_maps=True, **prov["params"])
    name = prov.get("class")
    output = prov.get("output", "error_map")
    if output not in ("error_map", "missed_map", "region_map"):
        raise XaimedError(f"unknown evaluation output {output!r}.")
    if name is None and "class" in prov and output != "region_map":
        members = list(result.classes.values())  # one layer for all classes (per label value)
    else:
        members = [result.classes[name] if name in result.classes else next(
            iter(result.classes.values()))]
    if output == "region_map":
        return members[0].region_map
    errors, missed, _ = class_layers(members)
    return errors if output == "error_map" else missed


def registration_result(prov: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """The :class:`~napari_xaimed.registration.RegistrationResult` a registration provenance
    describes, computed again."""
    from napari_xaimed.registration import register
    from napari_xaimed.registration.params import TUNABLE
    from napari_xaimed.registration.run import register_steps

    fixed, moving = _need(inputs, "fixed", "moving")
    params = accepted(register_steps, prov["params"], TUNABLE)
    for key in (*REGISTRATION_EXTRAS, "fixed", "moving", "fixed_spacing", "moving_spacing",
                "fixed_origin", "moving_origin", "transforms_dir"):
        params.pop(key, None)
    extras = {role: getattr(inputs[role], "data", inputs[role])
              for role in REGISTRATION_EXTRAS if role in inputs}
    return register(fixed.data, moving.data, fixed_spacing=fixed.spacing,
                    moving_spacing=moving.spacing, fixed_origin=fixed.origin,
                    moving_origin=moving.origin, **as_tuples(params), **extras)


REGISTRATION_OUTPUTS = ("displacement", "jacobian", "folded", "grid", "warped")


def _registration(prov: dict[str, Any], inputs: dict[str, Any], name: str) -> np.ndarray:
    output = prov.get("output")
    if output is None:  # the CLI names its files after them: warped.nii.gz, jacobian.nii.gz...
        stem = name.lower()
        output = next((o for o in REGISTRATION_OUTPUTS if o in stem), "warped")
    result = registration_result(prov, inputs)
    if output == "displacement":
        return np.moveaxis(result.displacement, -1, 0)  # as written: components first
    if output == "grid":
        return result.grid(float(prov["params"].get("grid_mm", 5.0)))
    return getattr(result, output)


def _carried(prov: dict[str, Any], inputs: dict[str, Any], base: Path | None) -> np.ndarray:
    (layer,) = _need(inputs, "layer")
    registration = prov.get("registration")
    if registration is None:
        raise XaimedError("this carried-along layer's provenance does not record its "
                          "registration: carry it along again with this version, then save it.")
    result = registration_result(registration, recorded_inputs(registration, base))
    return result.apply(layer.data, prov["params"]["interpolation"])


def _attribution(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed.attribution import METHODS, attribute
    from napari_xaimed.models.recorded import recorded_model

    (image,) = _need(inputs, "image")
    params = dict(prov["params"])
    method = params["method"]
    keep = (*METHODS[method].params, "preprocessing", "batch_size", "autocast", "seed",
            "spacing")
    kwargs = {k: v for k, v in params.items() if k in keep}
    if "target_index" in params and params.get("target") != "predicted":
        kwargs["target"] = params["target_index"]
    elif "channel" in params:
        kwargs["target"] = params["channel"]
    if params.get("region") == "given mask":
        kwargs["region"] = _need(inputs, "region")[0].data
    model = recorded_model(prov["model"], trust)
    result = attribute(model, image.data, method, device=prov.get("device", "auto"),
                       **as_tuples(kwargs))
    return result.map


#: Which array of a LongitudinalResult each output of the longitudinal widget is.
LONGITUDINAL_OUTPUTS = {"current": "current", "carried prior": "carried_prior",
                        "change": "change", "normalised change": "change_normalised",
                        "feature change": "feature_change"}


def _longitudinal(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed.attribution import METHODS, explain_change
    from napari_xaimed.models.recorded import recorded_model
    from napari_xaimed.registration.params import TUNABLE

    prior, current = _need(inputs, "prior", "current")
    params = prov["params"]
    method = params["method"]
    method_params = {k: v for k, v in params.get("method_params", {}).items()
                     if k in METHODS[method].params and k != "layer"}
    registered = params["registration"]
    if str(registered.get("source", "")).startswith("identity"):
        alignment: dict[str, Any] = {"registration": "identity"}
    elif registered.get("source") == "registered here":
        done = registered["params"]
        alignment = {"transform": registered["transform"], "seed": done.get("seed"),
                     "registration_params": as_tuples(
                         {k: v for k, v in done.items() if k in (*TUNABLE, "threads")})}
    else:
        raise XaimedError("this longitudinal output used a registration or field given in a "
                          "script: it cannot be rerun from its provenance alone.")
    output = prov.get("output", "change")
    if output not in LONGITUDINAL_OUTPUTS:
        raise XaimedError(f"unknown longitudinal output {output!r}.")
    model = recorded_model(prov["model"], trust)
    result = explain_change(prior.data, current.data, model, method=method,
                            spacing=current.spacing, origin=current.origin,
                            prior_spacing=prior.spacing, prior_origin=prior.origin,
                            target=params["target"], layer=params["layer"],
                            device=prov.get("device", "auto"), **alignment,
                            **as_tuples(method_params))
    return getattr(result, LONGITUDINAL_OUTPUTS[output])


def recompute(prov: dict[str, Any], base: Path | None = None, name: str = "",
              trust: bool = False) -> np.ndarray:
    """Compute the output a provenance dict describes again, from its recorded inputs.

    Parameters
    ----------
    prov : dict
        An output's ``metadata["xaimed"]`` or its JSON sidecar.
    base : pathlib.Path, optional
        The folder of the provenance file: inputs named there are looked for in it too.
    name : str
        The output's file name, which says which output of a CLI registration it is.
    trust : bool
        Run the code the model file names (a record of a trusted load needs it again).

    Raises
    ------
    XaimedError
        If an input or the model is missing, was never saved, or has changed, or the kind
        cannot be rerun.
    """
    kind = prov.get("kind")
    if "lazy" in prov or "lazy" in (prov.get("registration") or {}):
        # an in-memory rerun would read the whole volumes and register them at full size:
        # a different computation from the one recorded
        raise XaimedError(
            f"this {kind} output was computed on downsampled copies of lazy (larger than "
            "memory) layers, which rerun does not redo yet: run "
            "napari_xaimed.registration.register_lazy (or the widget) again with the "
            "recorded parameters and factors (provenance 'lazy').")
    inputs = recorded_inputs(prov, base) if kind != "registration-apply" else {
        role: resolve_input(role, record, base)
        for role, record in (prov.get("inputs") or {}).items()}
    if kind in ("segmentation", "class probability", "foreground probability"):
        return _segmentation(prov, inputs, trust)
    if kind == "panoptic evaluation":
        return _evaluation(prov, inputs)
    if kind == "registration":
        return _registration(prov, inputs, name)
    if kind == "registration-apply":
        return _carried(prov, inputs, base)
    if kind == "attribution":
        return _attribution(prov, inputs, trust)
    if kind == "longitudinal attribution":
        return _longitudinal(prov, inputs, trust)
    if kind in ("sample", "truth"):
        return _sample_data({"name": name, "sample": {"kind": kind, "params": prov["params"]}})
    raise XaimedError(
        f"outputs of kind {kind!r} cannot be rerun: rerun knows segmentation, class and "
        "foreground probabilities, panoptic evaluation, registration (and layers carried "
        "along), attribution and longitudinal attribution.")
