"""Reference and prediction instance labels of things with a core part, with deliberate splits,
merges, misses and false positives (and the overlap table that states them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples._common import Shape3, Spacing3, _check_geometry
from napari_xaimed.samples.phantom import grid_points


@dataclass
class PanopticSample:
    """Reference and prediction labels of things with a core part, and what was done to them.

    Attributes
    ----------
    reference, prediction : numpy.ndarray
        uint16 instance labels: each thing's whole extent (body and core) carries its id.
    reference_semantic, prediction_semantic : numpy.ndarray
        uint8 semantic labels in the layout of :attr:`parts`: 1 = thing body, 2 = core part.
    parts : dict
        The part layout for the evaluation's ``parts`` argument:
        ``{"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}``.
    events : dict
        ``"split"``: reference ids cut into several predictions; ``"merge"``: prediction id ->
        reference ids it joins; ``"miss"``: reference ids without a prediction;
        ``"false_positive"``: prediction ids without a reference; ``"matched"``: reference id ->
        prediction id of the things that were only perturbed.
    spacing : tuple of float
    seed : int
    """

    reference: np.ndarray
    prediction: np.ndarray
    reference_semantic: np.ndarray
    prediction_semantic: np.ndarray
    parts: dict
    events: dict[str, Any]
    spacing: Spacing3
    seed: int = 0
    split_pieces: dict[int, list[int]] = field(default_factory=dict)


def _ball(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    return np.sum((points - center) ** 2, axis=-1) < radius**2


def panoptic_pair(
    shape: Shape3 = (64, 64, 64),
    spacing: Spacing3 = (1.0, 1.0, 1.0),
    *,
    n_things: int = 10,
    radius_mm: tuple[float, float] = (4.0, 7.0),
    seed: int = 0,
) -> PanopticSample:
    """Reference/prediction instance labels with parts and deliberate errors.

    The first things of the reference are given roles: one is split in two by a cut through an
    off-centre plane, two neighbours are merged by one prediction that bridges them, one is
    missed; one prediction is a false positive far from any reference; the rest are matched with a
    small shift and a radius change, and their core parts moved a little.

    Parameters
    ----------
    shape, spacing : tuple
        Grid (``(z, y, x)``, mm).
    n_things : int
        Reference things, at least 5 (split, merge pair, miss and one plain match).
    radius_mm : (float, float)
        Range of thing radii.
    seed : int

    Returns
    -------
    PanopticSample
    """
    shape, spacing = _check_geometry(shape, spacing, minimum=32)
    if n_things < 5:
        raise XaimedError(f"n_things must be at least 5 (split, merge pair, miss, match), got {n_things}.")
    rng = np.random.default_rng(seed)
    points = grid_points(shape, spacing)
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    gap = 3.0 * max(spacing)  # keeps distinct things apart under 26-connectivity

    def place(radius: float, placed: list[tuple[np.ndarray, float]], near: tuple | None = None):
        for _ in range(20000):
            if near is None:
                center = rng.uniform(radius + gap, extent - radius - gap)
            else:
                other_center, other_radius = near
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                center = other_center + direction * (other_radius + radius + gap * 0.8)
                if np.any(center < radius + gap) or np.any(center > extent - radius - gap):
                    continue
            if all(
                np.linalg.norm(center - c) >= r + radius + gap or (near is not None and c is near[0])
                for c, r in placed
            ):
                return center
        raise XaimedError(
            f"Could not fit {n_things} things of radius {radius_mm} mm in {shape} voxels: use fewer "
            "things or a larger volume."
        )

    things: list[tuple[np.ndarray, float]] = []
    for i in range(n_things):
        # The thing to be split is the largest, so both of its pieces are sizeable; the merged
        # pair is of one size, so each of them overlaps the merging prediction alike.
        if i == 0:
            radius = float(radius_mm[1])
        elif i == 2:
            radius = things[1][1]
        elif i == 1:
            radius = float(rng.uniform(np.mean(radius_mm), radius_mm[1]))
        else:
            radius = float(rng.uniform(*radius_mm))
        near = things[1] if i == 2 else None  # things 1 and 2 are neighbours, for the merge
        things.append((place(radius, things, near), radius))
    fp_radius = float(rng.uniform(*radius_mm))
    fp_center = place(fp_radius, things)

    reference = np.zeros(shape, np.uint16)
    reference_core = np.zeros(shape, bool)
    for rid, (center, radius) in enumerate(things, start=1):
        reference[_ball(points, center, radius)] = rid
        core_center = center + rng.uniform(-0.2, 0.2, 3) * radius
        reference_core |= _ball(points, core_center, 0.5 * radius) & (reference == rid)

    prediction = np.zeros(shape, np.uint16)
    prediction_core = np.zeros(shape, bool)
    # Prediction ids are shuffled and offset so no code can rely on ids lining up with the reference.
    pred_ids = iter(rng.permutation(np.arange(1, n_things + 4)) * 3 + 100)
    events: dict[str, Any] = {"split": [], "merge": {}, "miss": [], "false_positive": [], "matched": {}}
    split_pieces: dict[int, list[int]] = {}

    # Split: thing 1 cut by a slab through an off-centre plane into a larger and a smaller piece.
    center, radius = things[0]
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    offset = (points - center) @ normal - 0.05 * radius
    whole = _ball(points, center, radius)
    pieces = [whole & (offset < -gap / 2), whole & (offset > gap / 2)]
    split_pieces[1] = []
    for piece in pieces:
        pid = int(next(pred_ids))
        prediction[piece] = pid
        split_pieces[1].append(pid)
    prediction_core |= _ball(points, center, 0.5 * radius) & (prediction > 0) & whole
    events["split"].append(1)

    # Merge: things 2 and 3 covered by one prediction with a bridge between them.
    (c2, r2), (c3, r3) = things[1], things[2]
    t = np.clip(((points - c2) @ (c3 - c2)) / np.dot(c3 - c2, c3 - c2), 0.0, 1.0)
    closest = c2 + t[..., None] * (c3 - c2)
    bridge = np.sum((points - closest) ** 2, axis=-1) < (0.4 * min(r2, r3)) ** 2
    merged = _ball(points, c2, r2 + 0.5) | _ball(points, c3, r3 + 0.5) | bridge
    pid = int(next(pred_ids))
    prediction[merged] = pid
    prediction_core |= (_ball(points, c2, 0.5 * r2) | _ball(points, c3, 0.5 * r3)) & merged
    events["merge"][pid] = [2, 3]

    # Miss: thing 4 has no prediction.
    events["miss"].append(4)

    # The others: shifted by up to one voxel, radius changed by up to 10%, core moved.
    for rid in range(5, n_things + 1):
        center, radius = things[rid - 1]
        shifted = center + rng.uniform(-1.0, 1.0, 3) * np.asarray(spacing)
        ball = _ball(points, shifted, radius * rng.uniform(0.9, 1.1))
        pid = int(next(pred_ids))
        prediction[ball] = pid
        core_center = shifted + rng.uniform(-0.25, 0.25, 3) * radius
        prediction_core |= _ball(points, core_center, 0.5 * radius) & ball
        events["matched"][rid] = pid

    # False positive: a thing where the reference has nothing.
    pid = int(next(pred_ids))
    fp = _ball(points, fp_center, fp_radius)
    prediction[fp] = pid
    prediction_core |= _ball(points, fp_center, 0.5 * fp_radius) & fp
    events["false_positive"].append(pid)

    def semantic(instances: np.ndarray, core: np.ndarray) -> np.ndarray:
        out = (instances > 0).astype(np.uint8)
        out[core & (instances > 0)] = 2
        return out

    return PanopticSample(
        reference=reference,
        prediction=prediction,
        reference_semantic=semantic(reference, reference_core),
        prediction_semantic=semantic(prediction, prediction_core),
        parts={"lesion": {"thing": [1, 2], "parts": {"core": [2]}}},
        events=events,
        spacing=spacing,
        seed=seed,
        split_pieces=split_pieces,
    )


def overlap_table(reference: np.ndarray, prediction: np.ndarray) -> dict[tuple[int, int], int]:
    """Voxel counts of every overlapping (reference id, prediction id) pair, both ids > 0."""
    both = (reference > 0) & (prediction > 0)
    pairs = np.stack([reference[both].astype(np.int64), prediction[both].astype(np.int64)])
    if pairs.size == 0:
        return {}
    unique, counts = np.unique(pairs, axis=1, return_counts=True)
    return {(int(r), int(p)): int(n) for (r, p), n in zip(unique.T, counts, strict=True)}


def connected_instances(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a mask, as the semantic-input evaluation will find them: its
    own :func:`napari_xaimed.evaluation.instances.connected_components` (labels ``1..n`` in
    raster order, uint16 below 65536 components, and ``n``)."""
    from napari_xaimed.components.memory import connected_components

    return connected_components(mask, connectivity=26)
