"""Recomputing one recorded output from its provenance: segmentation, evaluation, registration,
attribution, longitudinal explanation.

:func:`recipe` turns a provenance dict into the public calls that make the output (a
:class:`~napari_xaimed.cli.recipe.Recipe`); :func:`recompute` runs them on the recorded inputs
(``napari-xaimed rerun``) and :mod:`napari_xaimed.cli.script` writes them as a script."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cli.recipe import Call, Recipe, Ref, execute
from napari_xaimed.cli.rerun_inputs import (
    LEGACY_ROLES,
    REGISTRATION_EXTRAS,
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


def _model_load(record: dict[str, Any] | None, trust: bool, source: Any = None) -> Call:
    """Loading the recorded model, unchanged (its hashes checked), its code run only with
    ``trust``."""
    from napari_xaimed.models.recorded import recorded_load_args

    source, kwargs = recorded_load_args(record, trust, source)
    return Call("model", "napari_xaimed.attribution:load_model", (str(source),), kwargs)


def _require(roles: tuple[str, ...], *needed: str) -> None:
    missing = [role for role in needed if role not in roles]
    if missing:
        raise XaimedError(f"the provenance records no {' or '.join(missing)} input: it cannot be "
                          "rerun; compute the output again with this version.")


def roles_of(prov: dict[str, Any]) -> tuple[str, ...]:
    """The input roles a provenance records (for older records: its sources' roles)."""
    records = prov.get("inputs")
    if records is None:
        return LEGACY_ROLES.get(prov.get("kind", ""), ())[: len(prov.get("sources", []))]
    return tuple(role for role, record in records.items() if record is not None)


def _segmentation(prov: dict[str, Any], roles: tuple[str, ...], trust: bool) -> Recipe:
    from napari_xaimed.segmentation.run import method_params

    _require(roles, "image")
    params = dict(prov["params"])
    method = params.pop("method")
    kwargs: dict[str, Any] = {k: v for k, v in params.items()
                              if k in method_params(method) and k not in ("mask", "trust")}
    calls = []
    if method == "model":  # loaded here: unchanged, and its code run only with trust
        calls.append(_model_load((prov.get("facts") or {}).get("model"), trust,
                                 kwargs.get("model")))
        kwargs["model"] = Ref("model")
    if "mask" in roles:
        kwargs["mask"] = Ref("mask.data")
    elif params.get("mask") is not None:
        _require(roles, "mask")
    args = (Ref("image.data"), method)
    kwargs = {"spacing": Ref("image.spacing"), **as_tuples(kwargs)}
    roles = ("image", "mask") if "mask" in roles else ("image",)
    if prov["kind"] == "segmentation":
        calls.append(Call("labels", "napari_xaimed.segmentation:segment", args, kwargs))
        return Recipe(roles, calls, Ref("labels"), "image", is_label=True)
    calls.append(Call("steps", "napari_xaimed.segmentation:segment_steps", args, kwargs))
    calls.append(Call("result", "napari_xaimed.segmentation:run_steps", (Ref("steps"),)))
    index = int(prov["class"]) - 1 if prov["kind"] == "class probability" else 0
    return Recipe(roles, calls, Ref(f"result.probabilities[{index}]"), "image")


def _evaluation_recipe(prov: dict[str, Any], roles: tuple[str, ...]) -> Recipe:
    _require(roles, "reference", "prediction")
    output = prov.get("output", "error_map")
    if output not in ("error_map", "missed_map", "region_map"):
        raise XaimedError(f"unknown evaluation output {output!r}.")
    calls = [
        Call("result", "napari_xaimed.evaluation:evaluate",
             (Ref("reference.data"), Ref("prediction.data")),
             {"spacing": Ref("reference.spacing"), "keep_maps": True, **prov["params"]}),
        # one layer for all classes (each label value its own) when the record's class is None
        Call("output_map", "napari_xaimed.evaluation:evaluation_map", (Ref("result"), output),
             {"class_name": prov.get("class"),
              "all_classes": prov.get("class", "") is None}),
    ]
    return Recipe(("reference", "prediction"), calls, Ref("output_map"), "reference",
                  is_label=True)


def _evaluation(prov: dict[str, Any], inputs: dict[str, Any]) -> np.ndarray:
    return execute(_evaluation_recipe(prov, tuple(inputs)), inputs)


def _registration_calls(prov: dict[str, Any], roles: tuple[str, ...]) -> list[Call]:
    from napari_xaimed.registration.in_memory import register_in_memory_steps
    from napari_xaimed.registration.params import TUNABLE

    _require(roles, "fixed", "moving")
    # the keywords of the in-memory path: register_steps itself only forwards **kwargs
    params = accepted(register_in_memory_steps, prov["params"], TUNABLE)
    for key in (*REGISTRATION_EXTRAS, "fixed", "moving", "fixed_spacing", "moving_spacing",
                "fixed_origin", "moving_origin", "transforms_dir"):
        params.pop(key, None)
    extras = {role: Ref(f"{role}.data") if role not in ("fixed_points", "moving_points")
              else Ref(role) for role in REGISTRATION_EXTRAS if role in roles}
    return [Call("registration", "napari_xaimed.registration:register",
                 (Ref("fixed.data"), Ref("moving.data")),
                 {"fixed_spacing": Ref("fixed.spacing"), "moving_spacing": Ref("moving.spacing"),
                  "fixed_origin": Ref("fixed.origin"), "moving_origin": Ref("moving.origin"),
                  **as_tuples(params), **extras})]


def _registration_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    return ("fixed", "moving", *(r for r in REGISTRATION_EXTRAS if r in roles))


def registration_result(prov: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """The :class:`~napari_xaimed.registration.RegistrationResult` a registration provenance
    describes, computed again."""
    calls = _registration_calls(prov, tuple(inputs))
    return execute(Recipe(tuple(inputs), calls, Ref("registration"), "fixed"), inputs)


REGISTRATION_OUTPUTS = ("displacement", "jacobian", "folded", "grid", "warped")


def _registration(prov: dict[str, Any], roles: tuple[str, ...], name: str) -> Recipe:
    output = prov.get("output")
    if output is None:  # the CLI names its files after them: warped.nii.gz, jacobian.nii.gz...
        stem = name.lower()
        output = next((o for o in REGISTRATION_OUTPUTS if o in stem), "warped")
    calls = _registration_calls(prov, roles)
    if output == "displacement":  # as written: components first
        calls.append(Call("field", "numpy:moveaxis", (Ref("registration.displacement"), -1, 0)))
        result = Ref("field")
    elif output == "grid":
        calls.append(Call("grid", Ref("registration.grid"),
                          (float(prov["params"].get("grid_mm", 5.0)),)))
        result = Ref("grid")
    elif output in REGISTRATION_OUTPUTS:
        result = Ref(f"registration.{output}")
    else:
        raise XaimedError(f"unknown registration output {output!r}.")
    return Recipe(_registration_roles(roles), calls, result, "fixed",
                  is_label=output == "folded")


def _carried(prov: dict[str, Any], roles: tuple[str, ...]) -> Recipe:
    _require(roles, "layer")
    registration = prov.get("registration")
    if registration is None:
        raise XaimedError("this carried-along layer's provenance does not record its "
                          "registration: carry it along again with this version, then save it.")
    inner = roles_of(registration)
    if "layer" in inner:
        raise XaimedError("the carried layer's registration records an input named 'layer': "
                          "it cannot be told from the carried layer.")
    interpolation = prov["params"]["interpolation"]
    calls = [*_registration_calls(registration, inner),
             Call("carried", Ref("registration.apply"), (Ref("layer.data"), interpolation))]
    return Recipe(("layer", *_registration_roles(inner)), calls, Ref("carried"), "fixed",
                  is_label=interpolation in ("nearest", "label"))


def _attribution(prov: dict[str, Any], roles: tuple[str, ...], trust: bool) -> Recipe:
    from napari_xaimed.attribution import METHODS

    _require(roles, "image")
    params = dict(prov["params"])
    method = params["method"]
    keep = (*METHODS[method].params, "preprocessing", "batch_size", "autocast", "seed",
            "spacing")
    kwargs = {k: v for k, v in params.items() if k in keep}
    if "target_index" in params and params.get("target") != "predicted":
        kwargs["target"] = params["target_index"]
    elif "channel" in params:
        kwargs["target"] = params["channel"]
    used = ["image"]
    if params.get("region") == "given mask":
        _require(roles, "region")
        kwargs["region"], used = Ref("region.data"), ["image", "region"]
    calls = [_model_load(prov["model"], trust),
             Call("result", "napari_xaimed.attribution:attribute",
                  (Ref("model"), Ref("image.data"), method),
                  {"device": prov.get("device", "auto"), **as_tuples(kwargs)})]
    return Recipe(tuple(used), calls, Ref("result.map"), "image")


#: Which array of a LongitudinalResult each output of the longitudinal widget is.
LONGITUDINAL_OUTPUTS = {"current": "current", "carried prior": "carried_prior",
                        "change": "change", "normalised change": "change_normalised",
                        "feature change": "feature_change"}


def _longitudinal(prov: dict[str, Any], roles: tuple[str, ...], trust: bool) -> Recipe:
    from napari_xaimed.attribution import METHODS
    from napari_xaimed.registration.params import TUNABLE

    _require(roles, "prior", "current")
    params = prov["params"]
    method = params["method"]
    method_params = {k: v for k, v in params.get("method_params", {}).items()
                     if k in METHODS[method].params and k != "layer"}
    registered = params["registration"]
    if str(registered.get("source", "")).startswith("identity"):
        # the methods' noise seed (SmoothGrad, VarGrad, GradientSHAP), which the registered
        # branch passes along with the registration's
        alignment: dict[str, Any] = {"registration": "identity",
                                     "seed": params.get("method_params", {}).get("seed", 0)}
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
    calls = [_model_load(prov["model"], trust),
             Call("result", "napari_xaimed.attribution:explain_change",
                  (Ref("prior.data"), Ref("current.data"), Ref("model")),
                  {"method": method, "spacing": Ref("current.spacing"),
                   "origin": Ref("current.origin"), "prior_spacing": Ref("prior.spacing"),
                   "prior_origin": Ref("prior.origin"), "target": params["target"],
                   "layer": params["layer"], "device": prov.get("device", "auto"),
                   **alignment, **as_tuples(method_params)})]
    return Recipe(("prior", "current"), calls,
                  Ref(f"result.{LONGITUDINAL_OUTPUTS[output]}"), "current")


def recipe(prov: dict[str, Any], name: str = "", trust: bool = False) -> Recipe:
    """The public calls that compute the output a provenance dict describes.

    Parameters
    ----------
    prov : dict
        An output's ``metadata["xaimed"]`` or its JSON sidecar.
    name : str
        The output's file name, which says which output of a CLI registration it is.
    trust : bool
        Run the code the model file names (a record of a trusted load needs it again).

    Raises
    ------
    XaimedError
        If the kind cannot be computed from its provenance alone, or the record lacks an
        input it needs.
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
    roles = roles_of(prov)
    if kind in ("segmentation", "class probability", "foreground probability"):
        return _segmentation(prov, roles, trust)
    if kind == "panoptic evaluation":
        return _evaluation_recipe(prov, roles)
    if kind == "registration":
        return _registration(prov, roles, name)
    if kind == "registration-apply":
        return _carried(prov, roles)
    if kind == "attribution":
        return _attribution(prov, roles, trust)
    if kind == "longitudinal attribution":
        return _longitudinal(prov, roles, trust)
    reason = UNSCRIPTABLE.get(str(kind))
    raise XaimedError(
        f"outputs of kind {kind!r} cannot be computed again from their provenance"
        + (f": {reason}" if reason else "")
        + ". Rerun and scripts know segmentation, class and foreground probabilities, "
        "panoptic evaluation, registration (and layers carried along), attribution and "
        "longitudinal attribution.")


#: Why the other kinds of layer the plugin makes cannot be computed from their provenance.
UNSCRIPTABLE = {
    "sample": "it is sample data, not a computed output; napari_xaimed.samples makes it "
              "(the generator and seed are in its provenance's params)",
    "truth": "it is the known truth of sample data; napari_xaimed.samples makes it with the "
             "sample (the generator and seed are in its provenance's params)",
    "segmentation preview": "it is the live slice preview of the segmentation dock, not a "
                            "result; run Segment and use its output",
    "attribution ensemble": "the ensemble's provenance records its image by name only (no file "
                            "or hash), so it cannot be found again; call "
                            "napari_xaimed.attribution.ensemble_attribute on the image file "
                            "with the recorded params",
    "cohort case": "it is a case read from a cohort folder; its path is in the provenance's "
                   "sources",
}


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
    if kind in ("sample", "truth"):
        return _sample_data({"name": name, "sample": {"kind": kind, "params": prov["params"]}})
    plan = recipe(prov, name, trust)
    inputs = recorded_inputs(prov, base) if kind != "registration-apply" else {
        role: resolve_input(role, record, base)
        for role, record in (prov.get("inputs") or {}).items()}
    if kind == "registration-apply":
        inputs.update(recorded_inputs(prov["registration"], base))
    return execute(plan, inputs)
