"""What a model was trained on, and a warning when an input lies far outside it.

A model's config may carry ``"training_inputs"`` (the bundled models' do; the training code
writes it with :func:`training_statistics`): the training volumes' shape, voxel size, field of
view, and the intensity distribution *after the model's own intensity scaling* (what the network
sees). :func:`check_input` compares one input with it and :func:`warn_outside` raises an
:class:`OutOfDistributionWarning` naming what differs. The rule:

- **intensity**: some percentile (1, 5, 25, 50, 75, 95 or 99 %) of the scaled input lies more
  than :data:`INTENSITY_LIMIT` standard deviations of the scaled training voxels from the
  training volumes' percentile. Compared after the scaling because a z-scored model does not
  see an input's raw mean and spread (a brain MRI stored 0-1000 or 0-1 is the same input to
  it): the *shape* of the distribution is what it can be surprised by. For the bundled models
  held-out training-like volumes differ by at most 0.08, the lesion sample at 64^3 by 0.56, the
  longitudinal sample by 0.30; nilearn's MNI152 brain by 1.65 and a CT-like volume by 1.5.
- **geometry**, what the network sees: a model with a fixed ``input_size`` (a classifier) sees
  the whole volume resized, so its field of view (shape x spacing, mm) is compared; a model run
  on the volume's own grid (sliding windows) sees its voxels, so the voxel size it runs at is.
  Either differing by more than a factor :data:`GEOMETRY_RATIO` on an axis is warned about.

Nothing is checked for a model whose config has no ``training_inputs``, nor geometry for a call
without a spacing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from napari_xaimed.models.preprocess import Preprocessing, scale_intensity

#: Percentiles of the scaled intensities compared (the config's keys are their strings).
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: Largest percentile difference, in standard deviations of the scaled training voxels.
INTENSITY_LIMIT = 1.0
#: Largest factor between an input's and the training volumes' field of view or voxel size.
GEOMETRY_RATIO = 1.5
#: Voxels read for the percentiles at most (a strided subsample of a larger volume).
SAMPLE_VOXELS = 1 << 21


class OutOfDistributionWarning(UserWarning):
    """An input lies far outside what the model was trained on (see :mod:`.domain`); its
    results may mean little. ``reasons`` lists what differs."""

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


def _sample(volume: Any) -> np.ndarray:
    """The volume, or an evenly strided subsample of at most :data:`SAMPLE_VOXELS` voxels."""
    shape = np.shape(volume)
    step = max(1, int(np.ceil((np.prod(shape) / SAMPLE_VOXELS) ** (1 / len(shape)))))
    return np.asarray(volume[tuple(slice(None, None, step) for _ in shape)])


def training_statistics(volumes: Iterable[np.ndarray], spacing: Sequence[float],
                        preprocessing: dict[str, Any] | Preprocessing | None,
                        **described: Any) -> dict[str, Any]:
    """The ``training_inputs`` record of a model's config, from its training volumes.

    Parameters
    ----------
    volumes : iterable of numpy.ndarray
        The training volumes as given to the model (before its scaling), all one shape.
    spacing : sequence of float
        Their voxel size in mm, ``(z, y, x)``.
    preprocessing : dict or Preprocessing
        The model's preprocessing (its intensity scaling is applied per volume).
    **described
        Anything else worth keeping (the generator and seeds).
    """
    prep = preprocessing if isinstance(preprocessing, Preprocessing) else \
        Preprocessing.from_dict(preprocessing)
    scaled, shapes = [], set()
    for volume in volumes:
        shapes.add(tuple(np.shape(volume)))
        scaled.append(scale_intensity(_sample(volume), prep).ravel())
    if len(shapes) != 1:
        raise ValueError(f"training volumes of one shape expected, got {sorted(shapes)}")
    (shape,) = shapes
    voxels = np.concatenate(scaled)
    quantiles = np.percentile(voxels, PERCENTILES)
    return {"n_volumes": len(scaled), "shape": list(shape),
            "spacing": [float(s) for s in spacing],
            "field_of_view_mm": [round(float(n * s), 4) for n, s in zip(shape, spacing,
                                                                         strict=True)],
            "scaled_intensity": {
                "scaling": prep.scaling, "mean": round(float(voxels.mean()), 6),
                "std": round(float(voxels.std()), 6),
                "percentiles": {str(p): round(float(q), 6)
                                for p, q in zip(PERCENTILES, quantiles, strict=True)}},
            **described}


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values) + " mm"


def check_input(stats: dict[str, Any] | None, volume: Any, spacing: Sequence[float] | None,
                preprocessing: Preprocessing, model_spacing: Sequence[float] | None = None
                ) -> list[str]:
    """What makes ``volume`` lie far outside the training inputs ``stats`` (empty: nothing).

    Parameters
    ----------
    stats : dict or None
        The model config's ``training_inputs`` (None: nothing is checked).
    volume : array
        The input, ``(z, y, x)``, before the model's scaling.
    spacing : sequence of float or None
        Its voxel size in mm (None: the geometry is not checked).
    preprocessing : Preprocessing
        The scaling and input size the model runs with.
    model_spacing : sequence of float, optional
        The voxel size the volume is resampled to before the network (sliding-window models).
    """
    if not stats:
        return []
    reasons = []
    trained = stats["scaled_intensity"]
    scaled = scale_intensity(_sample(volume), preprocessing)
    ours = np.percentile(scaled, PERCENTILES)
    theirs = np.array([trained["percentiles"][str(p)] for p in PERCENTILES])
    unit = float(trained["std"]) or 1.0
    gap = np.abs(ours - theirs) / unit
    if trained.get("scaling") == preprocessing.scaling and gap.max() > INTENSITY_LIMIT:
        worst = int(np.argmax(gap))
        reasons.append(
            f"intensity: after the model's {preprocessing.scaling} scaling the input's "
            f"{PERCENTILES[worst]}th percentile is {ours[worst]:.3g}, the training volumes' "
            f"{theirs[worst]:.3g} ({gap[worst]:.2g} training standard deviations apart; "
            f"percentiles 1-99 of the input {np.round(ours, 2).tolist()}, of the training "
            f"{np.round(theirs, 2).tolist()})")
    if spacing is not None:
        shape = np.shape(volume)[-3:]
        if preprocessing.input_size is not None:
            what, ours_g = "field of view", [n * s for n, s in zip(shape, spacing, strict=True)]
            theirs_g = stats["field_of_view_mm"]
            seen = [f / n for f, n in zip(ours_g, preprocessing.input_size, strict=True)]
            how = (f" (the network sees it resized to {tuple(preprocessing.input_size)}, at "
                   f"{_mm(seen)} voxels; trained at {_mm(stats['spacing'])})")
        else:
            what, ours_g = "voxel size", list(model_spacing or spacing)
            theirs_g, how = stats["spacing"], ""
        ratio = np.asarray(ours_g, float) / np.asarray(theirs_g, float)
        if np.any(ratio > GEOMETRY_RATIO) or np.any(ratio < 1 / GEOMETRY_RATIO):
            reasons.append(f"{what}: {_mm(ours_g)}, trained on {_mm(theirs_g)}{how}")
    return reasons


def warn_outside(stats: dict[str, Any] | None, volume: Any, spacing: Sequence[float] | None,
                 preprocessing: Preprocessing, model: str = "the model",
                 model_spacing: Sequence[float] | None = None) -> list[str]:
    """:func:`check_input`, and an :class:`OutOfDistributionWarning` naming what differs when
    anything does; returns the reasons (for the output's provenance)."""
    reasons = check_input(stats, volume, spacing, preprocessing, model_spacing)
    if reasons:
        warnings.warn(OutOfDistributionWarning(
            f"this input lies far outside what {model} was trained on, so its output may mean "
            "little: " + "; ".join(reasons) + ".", reasons), stacklevel=3)
    return reasons
