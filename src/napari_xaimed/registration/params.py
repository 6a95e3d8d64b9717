"""Transform types and the few ANTs parameters users tune, checked before ANTs sees them.

``ants.registration`` ignores keyword arguments it does not know (a typo silently runs the
defaults), so every name and value is validated here and mapped onto its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_xaimed._core.errors import XaimedError

LINEAR = ("Translation", "Rigid", "Similarity", "Affine")
DEFORMABLE = ("SyN", "SyNRA", "SyNOnly", "ElasticSyN", "Elastic")
QUICK_SYN = "antsRegistrationSyNQuick[s]"
#: Transform types :func:`~napari_xaimed.registration.register` accepts.
TRANSFORMS = (*LINEAR, *DEFORMABLE, QUICK_SYN)
#: Friendlier names for the presets.
ALIASES = {"QuickSyN": QUICK_SYN, "SyNQuick": QUICK_SYN}
#: Similarity metrics of the tuned stage (ANTs names). ``sampling`` is the number of histogram
#: bins for ``mattes``, the neighbourhood radius (voxels) for ``CC``, unused otherwise.
METRICS = ("mattes", "CC", "meansquares", "demons")
# Number of optimisation stages ANTs runs for each type (for the progress bar).
STAGES = {"Translation": 1, "Rigid": 1, "Similarity": 1, "Affine": 1, "SyN": 2, "SyNRA": 3,
          "SyNOnly": 1, "ElasticSyN": 2, "Elastic": 2, QUICK_SYN: 3}
TUNABLE = ("iterations", "metric", "sampling", "gradient_step", "flow_sigma", "total_sigma")


def transform_name(transform: str) -> str:
    """The ANTs name of ``transform`` (aliases resolved), or a clear error."""
    name = ALIASES.get(transform, transform)
    if name not in TRANSFORMS:
        raise XaimedError(
            f"unknown transform {transform!r}: choose one of {', '.join(TRANSFORMS)} "
            f"(or {', '.join(ALIASES)} for the quick SyN preset)."
        )
    return name


def _iterations(value: Any) -> tuple[int, ...]:
    try:
        items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        its = tuple(int(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise XaimedError(f"iterations must be integers per level, got {value!r}.") from exc
    if not its or any(i < 0 for i in its) or not any(its):
        raise XaimedError(
            f"iterations must be one non-negative count per resolution level (coarse to fine), "
            f"at least one above 0, e.g. (40, 20, 0); got {value!r}."
        )
    return its


def ants_arguments(transform: str, params: dict[str, Any]) -> dict[str, Any]:
    """Map the tuned parameters onto ``ants.registration`` keyword arguments.

    Parameters
    ----------
    transform : str
        An ANTs transform type from :data:`TRANSFORMS`.
    params : dict
        Any of :data:`TUNABLE`: ``iterations`` (per level, coarse to fine: the deformable stage
        of SyN-type transforms, or the only stage of linear ones), ``metric`` (of that stage,
        from :data:`METRICS`), ``sampling`` (bins or radius, see :data:`METRICS`),
        ``gradient_step``, ``flow_sigma`` and ``total_sigma`` (deformable only).

    Returns
    -------
    dict
        Keyword arguments for ``ants.registration``.
    """
    unknown = set(params) - set(TUNABLE)
    if unknown:
        raise XaimedError(f"unknown registration parameters {sorted(unknown)}: the tunable ones "
                          f"are {', '.join(TUNABLE)}.")
    if transform == QUICK_SYN and params:
        raise XaimedError(f"the quick SyN preset has fixed settings, so {sorted(params)} would be "
                          "ignored: use transform='SyN' to tune them.")
    linear = transform in LINEAR
    out: dict[str, Any] = {}
    if "iterations" in params:
        its = _iterations(params["iterations"])
        if linear:
            levels = len(its)
            out["aff_iterations"] = its
            out["aff_shrink_factors"] = tuple(2 ** (levels - 1 - k) for k in range(levels))
            out["aff_smoothing_sigmas"] = tuple(levels - 1 - k for k in range(levels))
        else:
            out["reg_iterations"] = its
    if "metric" in params:
        metric = params["metric"]
        if metric not in METRICS:
            raise XaimedError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}.")
        if linear and metric == "demons":
            raise XaimedError("the demons metric is for deformable stages: use mattes, CC or "
                              "meansquares with a linear transform.")
        out["aff_metric" if linear else "syn_metric"] = metric
    if "sampling" in params:
        try:
            sampling = int(params["sampling"])
        except (TypeError, ValueError) as exc:
            raise XaimedError(f"sampling must be a positive integer, got "
                              f"{params['sampling']!r}.") from exc
        if sampling < 1:
            raise XaimedError(f"sampling must be a positive integer, got {params['sampling']!r}.")
        out["aff_sampling" if linear else "syn_sampling"] = sampling
    for key, ants_key in (("gradient_step", "grad_step"), ("flow_sigma", "flow_sigma"),
                          ("total_sigma", "total_sigma")):
        if key in params:
            if linear:
                raise XaimedError(f"{key} applies to deformable transforms, not {transform}.")
            try:
                value = float(params[key])
            except (TypeError, ValueError) as exc:
                raise XaimedError(f"{key} must be a number, got {params[key]!r}.") from exc
            if not value >= 0 or (key == "gradient_step" and value == 0):
                raise XaimedError(f"{key} must be a positive number, got {params[key]!r}.")
            out[ants_key] = value
    return out


def ants_seed(seed: int | None) -> int | None:
    """ANTs' ``--random-seed`` for a user seed: ANTs reads 0 as "seed from the clock", so the
    user's seed ``s >= 0`` becomes ``s + 1``; None leaves ANTs unseeded."""
    if seed is None:
        return None
    seed = int(seed)
    if not 0 <= seed < 2**31 - 1:
        raise XaimedError(f"seed must be an integer in [0, 2**31 - 2], got {seed}.")
    return seed + 1
