"""Surface distances of many instance pairs at once, by growing lattice shells.

For every matched pair of single instances, each surface voxel of one instance needs its distance
(mm) to the nearest surface voxel of its partner. A k-d tree per pair (what
:func:`~napari_xaimed.evaluation.distances.surface_distances` does on crops) costs about a
microsecond per query point; here most points need far less, because in a decent prediction most
surface voxels lie on or next to the partner's surface (in the evaluation benchmark a third at
distance 0 and 80% within one voxel).

So all pairs are searched together: the lattice offsets within a small ellipsoid are tried in
order of their length in mm, and a point is settled at the first offset that lands on a surface
voxel of its partner. Every shorter offset has been tried before it, so that length is the exact
nearest distance, the same as the k-d tree gives. Points not settled inside the ellipsoid, or too
near the volume's edge for the offsets to stay inside, are measured against all of their
partner's surface (directly when they are few, else through a k-d tree), so the answer is exact
for any shape. Every distance is the length of an integer offset
(:func:`~napari_xaimed.evaluation.lattice.offset_lengths`), so it does not depend on where the
pair sits, and both ways give the same bits.

Each step is one lookup per point: the partner surface voxels of a z-slab are marked with their
instance's compact label in a small array, and a point has landed when the mark under it is its
partner's label. The maps themselves are only read to find the surfaces, so they may hold any ids
(``ref_values``/``pred_values`` of :func:`pair_surface_distances`).

Surfaces are those of :func:`~napari_xaimed.evaluation.distances.surface`: instance voxels with a
6-neighbour outside the instance or outside the volume.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from napari_xaimed.evaluation.lattice import nearest_offsets, offset_lengths

# Offsets tried before the k-d tree takes over: those no longer (in mm) than this many of the
# finest voxel sides (123 offsets on an isotropic grid).
SHELL_RADIUS_VOXELS = 3.0
# z-slabs searched one after the other: the surface flags take about 1/SLABS of a byte per voxel
# (each side, the two sides run at once).
SLABS = 8
# ... but no slab's flags below this many bytes: on a small volume every slab repeats the
# whole sequence of offsets, whose numpy calls then cost more than the flags save.
SLAB_BYTES = 1 << 22
# The shells stop when fewer points than this are left: a k-d tree over their partners' surfaces
# is then cheaper than the offsets still to try.
FEW = 32
# Points handled per step where a step makes several temporaries per point.
CHUNK = 1 << 14


def _strides(shape: tuple[int, ...]) -> np.ndarray:
    return np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)


def _coords(voxels: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """``np.unravel_index`` in the flat indices' own dtype (int32 for most volumes: a third of
    the memory of its int64 result)."""
    z, rest = np.divmod(voxels, shape[1] * shape[2])
    y, x = np.divmod(rest, shape[2])
    return z, y, x


def on_surface(flat_map: np.ndarray, shape: tuple[int, ...], voxels: np.ndarray,
               labels: np.ndarray) -> np.ndarray:
    """Which of ``voxels`` (flat indices, holding ``labels`` in ``flat_map``) lie on the surface
    of their instance: a 6-neighbour holds another label, or the voxel is on the volume's edge."""
    out = np.zeros(len(voxels), bool)
    for start in range(0, len(voxels), CHUNK):  # chunks bound the temporaries
        part, label = voxels[start:start + CHUNK], labels[start:start + CHUNK]
        edge = np.zeros(len(part), bool)
        for axis, coord in enumerate(_coords(part, shape)):
            edge |= coord == 0
            edge |= coord == shape[axis] - 1
        inner = np.flatnonzero(~edge)  # all six neighbours exist
        where, label = part[inner], label[inner]
        border = np.zeros(len(inner), bool)
        for stride in _strides(shape).tolist():  # Python ints keep int32 indices int32
            border |= flat_map.take(where - stride) != label
            border |= flat_map.take(where + stride) != label
        edge[inner] = border
        out[start:start + CHUNK] = edge
    return out


def lattice_offsets(spacing: tuple[float, float, float], radius_mm: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """All integer offsets ``(dz, dy, dx)`` no longer than ``radius_mm``, shortest first, and
    their lengths in mm."""
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    reach = np.floor(radius_mm / spacing_arr + 1e-9).astype(int)
    axes = [np.arange(-r, r + 1) for r in reach]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    lengths = offset_lengths(offsets, spacing_arr)
    keep = lengths <= radius_mm + 1e-9
    order = np.argsort(lengths[keep], kind="stable")
    return offsets[keep][order], lengths[keep][order]


def nearest_partner_surface(
    points: np.ndarray, partners: np.ndarray, target_map: np.ndarray,
    target_points: list[np.ndarray | None], spacing: tuple[float, float, float],
    slabs: int = SLABS,
) -> np.ndarray:
    """Distance (mm) from each point to the nearest surface voxel of its partner instance.

    Parameters
    ----------
    points : numpy.ndarray
        Flat voxel indices of the query points.
    partners : numpy.ndarray
        For each point, the compact label of its partner instance.
    target_map : numpy.ndarray
        The partners' instance map (3D; only its shape is read).
    target_points : list
        Per compact label, the flat indices of that instance's surface voxels (None when it is
        nobody's partner).
    spacing : tuple of float
    slabs : int
        The volume is searched in up to this many z-slabs (fewer where a slab's labels would
        take less than :data:`SLAB_BYTES`), so the labels of partner surface voxels take a
        slab's worth of small integers (plus the search's reach), not the volume's.

    Returns
    -------
    numpy.ndarray
        float64 distances, one per point.
    """
    shape = target_map.shape
    plane = shape[1] * shape[2]
    offsets, lengths = lattice_offsets(spacing, SHELL_RADIUS_VOXELS * min(spacing))
    steps = (offsets @ _strides(shape)).tolist()
    reach = np.abs(offsets).max(axis=0)
    distance = np.full(len(points), np.nan)

    label_bytes = 1 if len(target_points) < 2**8 else 2 if len(target_points) < 2**16 else 4
    slabs = min(max(1, int(slabs)), -(-shape[0] * plane * label_bytes // SLAB_BYTES))
    thickness = -(-shape[0] // slabs)
    n_slabs = -(-shape[0] // thickness)
    # Each point's slab, or n_slabs for points too near the volume's edge for the offsets.
    slab_of = np.empty(len(points), np.int32)
    for start in range(0, len(points), CHUNK):
        coords = _coords(points[start:start + CHUNK], shape)
        outside = np.zeros(len(coords[0]), bool)
        for axis in range(3):
            outside |= coords[axis] < reach[axis]
            outside |= coords[axis] >= shape[axis] - reach[axis]
        slab_of[start:start + CHUNK] = np.where(outside, n_slabs, coords[0] // thickness)
    by_slab = np.argsort(slab_of.astype(np.uint16) if n_slabs < 2**16 else slab_of,
                         kind="stable")  # a radix sort
    slab_starts = np.searchsorted(slab_of[by_slab], np.arange(n_slabs + 1))
    surface, surface_label, plane_starts = _labelled_surface(target_points, plane, shape[0])
    partners = partners.astype(surface_label.dtype)
    settled = np.iinfo(surface_label.dtype).max  # no instance has it (labels are fewer)
    # One buffer for every slab: the marks of the last slab are cleared, not the buffer.
    marks = np.zeros(min(thickness + 2 * int(reach[0]), shape[0]) * plane, surface_label.dtype)
    for k in range(n_slabs):
        active = by_slab[slab_starts[k]:slab_starts[k + 1]]
        if not len(active):
            continue
        # The partner surface voxels in the slab and the search's reach around it, each
        # marked with its instance's label: one lookup tells "on my partner's surface".
        z0, z1 = k * thickness, min((k + 1) * thickness, shape[0])
        z_lo, z_hi = int(max(z0 - reach[0], 0)), int(min(z1 + reach[0], shape[0]))
        lo = z_lo * plane
        first, last = plane_starts[z_lo], plane_starts[z_hi]
        marked = surface[first:last] - lo
        marks[marked] = surface_label[first:last]
        where, partner = points[active] - lo, partners[active]
        unsettled = len(active)  # settled points get a label that no instance has
        for step, length in zip(steps, lengths, strict=True):
            if unsettled < FEW:
                break
            # Positions, not boolean masks: numpy selects and assigns through them faster.
            hit = np.flatnonzero(marks.take(where + step) == partner)
            if hit.size:
                distance[active.take(hit)] = length
                partner[hit] = settled
                unsettled -= hit.size
                if unsettled < 0.75 * len(active):  # drop the settled points now and then
                    keep = np.flatnonzero(partner != settled)
                    active, where, partner = active.take(keep), where.take(keep), partner.take(
                        keep)
        marks[marked] = 0
    del marks

    left = np.flatnonzero(np.isnan(distance))
    if len(left):
        # The points the shells left, against all their partner's surface voxels (directly
        # when they are few, else through a k-d tree), from integer voxel coordinates.
        order = left[np.argsort(partners[left], kind="stable")]
        labels, starts = np.unique(partners[order], return_index=True)
        for label, run in zip(labels, np.split(order, starts[1:]), strict=True):
            target = np.stack(np.unravel_index(target_points[label], shape), 1)
            query = np.stack(np.unravel_index(points[run], shape), 1)
            distance[run] = nearest_offsets(query, target, spacing)[1]
    return distance


def _labelled_surface(target_points: list[np.ndarray | None], plane: int, n_planes: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All partner surface voxels ordered by z-plane, the label of each (the smallest
    unsigned dtype that holds the labels), and where each plane's voxels start
    (``n_planes + 1`` entries). Within a plane the order does not matter (each voxel is
    marked once), so a radix sort by plane does instead of a sort of the indices."""
    labels = [k for k, v in enumerate(target_points) if v is not None]
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if len(target_points) < 2**(
        8 * np.dtype(t).itemsize))  # below its largest value, kept for settled points
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, dtype), np.zeros(n_planes + 1, np.int64)
    voxels = np.concatenate([target_points[k] for k in labels])
    owner = np.repeat(np.asarray(labels, dtype), [len(target_points[k]) for k in labels])
    z = voxels // plane
    order = np.argsort(z.astype(np.uint16) if n_planes <= 2**16 else z, kind="stable")
    plane_starts = np.zeros(n_planes + 1, np.int64)
    np.cumsum(np.bincount(z, minlength=n_planes), out=plane_starts[1:])
    return voxels[order], owner[order], plane_starts


def _surfaces(label_map: np.ndarray, index: np.ndarray, starts: np.ndarray,
              labels: np.ndarray, values: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Surface voxels of the given compact labels: flat indices, their labels, and per label
    (a list over ``0..max label``) its own surface voxels. ``values[k]``: the value of label
    ``k`` in ``label_map`` (default ``k``)."""
    runs = [index[starts[k]:starts[k + 1]] for k in labels]
    voxels = np.concatenate(runs)  # int32 while the volume has fewer than 2**31 voxels
    sizes = [len(r) for r in runs]
    owner = np.repeat(labels.astype(np.int32 if len(starts) < 2**31 else np.int64), sizes)
    in_map = (np.repeat(labels.astype(label_map.dtype), sizes) if values is None
              else np.repeat(values[labels], sizes))
    keep = on_surface(label_map.reshape(-1), label_map.shape, voxels, in_map)
    voxels, owner = voxels[keep], owner[keep]
    per_label: list[np.ndarray | None] = [None] * (int(labels.max()) + 1 if len(labels) else 0)
    counts = np.bincount(owner, minlength=len(per_label))
    # ``voxels`` are grouped by label in the order of ``labels`` already.
    bounds = np.concatenate([[0], np.cumsum(counts[labels])])
    for k, lo, hi in zip(labels, bounds[:-1], bounds[1:], strict=True):
        per_label[k] = voxels[lo:hi]
    return voxels, owner, per_label


def pair_surface_distances(
    ref_map: np.ndarray, pred_map: np.ndarray, crops, refs: np.ndarray, preds: np.ndarray,
    spacing: tuple[float, float, float], ref_values: np.ndarray | None = None,
    pred_values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surface distances of the pairs ``(refs[i], preds[i])`` of compact single instances.

    ``crops`` is the :class:`~napari_xaimed.evaluation.footprints.VoxelCrops` of the two maps
    (its per-instance voxel lists). Each instance may be in one pair only. The maps are compact
    (values ``0..n``), or hold any ids with ``ref_values[k]``/``pred_values[k]`` the id of
    compact number ``k`` (:class:`~napari_xaimed.evaluation.footprints.LabelScan`).

    Returns
    -------
    (ref_to_pred, ref_pair, pred_to_ref, pred_pair)
        Distances (mm) from each reference surface voxel to its partner's surface and the pair
        number of each, then the same from the prediction side.
    """
    refs, preds = np.asarray(refs, np.int64), np.asarray(preds, np.int64)
    pair_of_ref = np.full(len(crops.ref_starts), -1, np.int32)
    pair_of_ref[refs] = np.arange(len(refs))
    pair_of_pred = np.full(len(crops.pred_starts), -1, np.int32)
    pair_of_pred[preds] = np.arange(len(preds))
    partner_pred = np.zeros(len(crops.ref_starts), np.intp)
    partner_pred[refs] = preds
    partner_ref = np.zeros(len(crops.pred_starts), np.intp)
    partner_ref[preds] = refs
    # The two sides in two threads: the work is numpy gathers, which release the GIL.
    with ThreadPoolExecutor(2) as pool:
        ref_side = pool.submit(_surfaces, ref_map, crops.ref_index, crops.ref_starts, refs,
                               ref_values)
        pred_vox, pred_owner, pred_points = _surfaces(pred_map, crops.pred_index,
                                                      crops.pred_starts, preds, pred_values)
        ref_vox, ref_owner, ref_points = ref_side.result()
        to_pred, to_ref = partner_pred[ref_owner], partner_ref[pred_owner]
        forward = pool.submit(nearest_partner_surface, ref_vox, to_pred, pred_map, pred_points,
                              spacing)
        pred_to_ref = nearest_partner_surface(pred_vox, to_ref, ref_map, ref_points, spacing)
        ref_to_pred = forward.result()
    return ref_to_pred, pair_of_ref[ref_owner], pred_to_ref, pair_of_pred[pred_owner]
