"""Surface distances of instances too large for one crop, slab by slab with bounded memory.

The values of :func:`~napari_xaimed.evaluation.distances.distance_metrics` on a group's
bounding box crop, without that crop: the box is cut into slabs of z-planes, and only a few
slabs' masks and surface points are in memory at a time.

- **Surfaces** (:class:`SlabSurfaces`): each slab's mask is read from the (lazy) label map;
  the surface voxels of a slab are found with the last plane of the slab before and the first
  plane of the slab after it (planes outside the box count as outside), exactly the voxels
  :func:`~napari_xaimed.evaluation.distances.surface` finds on the whole crop.
- **Nearest points** (:func:`nearest_offsets`): a point of one side's slab that is also on
  the other side's surface is at 0; the others are looked up in a
  :class:`scipy.spatial.cKDTree` of the other side's surface points in the same slab (one
  tree per slab, kept while the sweep needs it). A found distance is the nearest one if it
  is no larger than the gap (in mm along z) to the first plane outside the slabs looked up;
  the others are looked up in the slabs of a window of 1, 2, 4, ... slabs on either side
  (each slab only for the points its z-gap does not rule out), up to
  :data:`MAX_HALF_WINDOW`, and the rest in each remaining slab, read and dropped one at a
  time, keeping the minimum.
- **Distances as counts**: each distance is the length of the integer voxel offset to its
  nearest point (:func:`~napari_xaimed.evaluation.lattice.nearest_offsets`: the least length,
  ties of the tree's rounded distances resolved), so equal offsets give bitwise equal values,
  the same as the in-memory paths give, and kept as distinct values with
  their counts (:class:`CountedDistances`); HD, HD95 (numpy's linear percentile), ASSD and
  NSD follow exactly from the counts
  (:func:`~napari_xaimed.evaluation.distances.counted_distance_metrics`).

Memory: a few slabs' masks (``(planes, y, x)`` booleans), their surface points and trees
(up to ``2 * MAX_HALF_WINDOW + 1`` slabs while a window is widened), and the distinct distance
values (no more than the distinct offsets that occur, bounded by the box's extent, not its
volume).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from napari_xaimed.evaluation.distances import counted_distance_metrics, merge_counts
from napari_xaimed.evaluation.lattice import nearest_offsets as lattice_nearest
from napari_xaimed.evaluation.lattice import offset_lengths

Box = tuple[slice, ...]

#: Widest window (slabs on either side of the queried slab) whose points are held at once.
MAX_HALF_WINDOW = 4


def slab_edges(box: Box, planes: int) -> np.ndarray:
    """Box-relative z edges of the slabs: cut at multiples of ``planes`` of the volume's z
    (so slabs line up with chunks of that size), ``len(edges) - 1`` slabs."""
    start, stop = box[0].start, box[0].stop
    cuts = np.arange((start // planes + 1) * planes, stop, planes)
    return np.concatenate([[start], cuts, [stop]]).astype(np.int64) - start


class SlabSurfaces:
    """Surface voxels of where ``labels`` holds one of ``ids``, inside ``box``, per slab.

    Parameters
    ----------
    labels : array-like
        3D label map (numpy, zarr, dask); only the box's planes are read, a slab at a time.
    ids : numpy.ndarray
        The label values that form the mask.
    box : tuple of slice
        The crop; voxels outside it count as outside the mask.
    edges : numpy.ndarray
        Box-relative z edges of the slabs (:func:`slab_edges`).
    """

    def __init__(self, labels: Any, ids: np.ndarray, box: Box, edges: np.ndarray):
        self.labels, self.ids, self.box, self.edges = labels, np.asarray(ids), box, edges
        self.n_slabs = len(edges) - 1
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._points: dict[int, np.ndarray] = {}
        self._trees: dict[int, cKDTree | None] = {}
        self._borders: dict[int, np.ndarray] = {}

    def _mask(self, j: int) -> np.ndarray:
        """The mask of slab ``j``. The two last used are kept: a sweep in z that asks for
        slab ``j - 1``, ``j``, ``j + 1`` in that order reads each slab once."""
        if j in self._masks:
            self._masks.move_to_end(j)
            return self._masks[j]
        if len(self._masks) >= 2:
            self._masks.popitem(last=False)
        z0 = self.box[0].start
        box = (slice(z0 + int(self.edges[j]), z0 + int(self.edges[j + 1])), *self.box[1:])
        block = self.labels[box]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        mask = block == self.ids[0] if len(self.ids) == 1 else np.isin(block, self.ids)
        self._masks[j] = mask
        return mask

    def points(self, j: int, keep: bool = True) -> np.ndarray:
        """Box-relative ``(n, 3)`` int32 coordinates of slab ``j``'s surface voxels; with
        ``keep`` they stay cached until :meth:`keep_only` drops them."""
        if j in self._points:
            return self._points[j]
        # planes outside the box count as outside, as in surface() of the whole crop
        before = self._mask(j - 1)[-1].copy() if j > 0 else None
        core = self._mask(j)
        after = self._mask(j + 1)[0] if j + 1 < self.n_slabs else None
        border = _slab_surface(core, before, after)
        found = np.argwhere(border).astype(np.int32)
        found[:, 0] += self.edges[j]
        if keep:
            self._points[j], self._borders[j] = found, border
        return found

    def on_surface(self, j: int, points: np.ndarray) -> np.ndarray:
        """Whether each of ``points`` (box-relative, in slab ``j``) is a surface voxel here."""
        if j not in self._borders:
            self.points(j)
        border = self._borders[j]
        return border[points[:, 0] - self.edges[j], points[:, 1], points[:, 2]]

    def tree(self, j: int, spacing: np.ndarray, keep: bool = True
             ) -> tuple[np.ndarray, cKDTree | None]:
        """Slab ``j``'s surface points and a k-d tree of them in mm (None when there are
        none); cached like :meth:`points`."""
        found = self.points(j, keep)
        if j in self._trees:
            return found, self._trees[j]
        # unbalanced, uncompacted trees: built and queried about twice as fast here
        tree = (cKDTree(found * spacing, balanced_tree=False, compact_nodes=False)
                if len(found) else None)
        if keep:
            self._trees[j] = tree
        return found, tree

    def keep_only(self, lo: int, hi: int) -> None:
        """Drop the cached points and trees of the slabs outside ``lo..hi``."""
        for cache in (self._points, self._trees, self._borders):
            for j in [j for j in cache if not lo <= j <= hi]:
                del cache[j]


def _slab_surface(core: np.ndarray, before: np.ndarray | None, after: np.ndarray | None
                  ) -> np.ndarray:
    """The voxels of ``core`` (planes of a mask) with a 6-neighbour outside the mask, given
    the mask's planes just before and after it (None: outside); what
    :func:`~napari_xaimed.evaluation.distances.surface` finds in these planes of the whole
    mask, with one slab-sized temporary."""
    interior = core.copy()
    interior[1:] &= core[:-1]
    interior[:-1] &= core[1:]
    for plane, end in ((before, 0), (after, -1)):
        if plane is None:
            interior[end] = False
        else:
            interior[end] &= plane
    interior[:, 1:] &= core[:, :-1]
    interior[:, :-1] &= core[:, 1:]
    interior[:, [0, -1]] = False
    interior[:, :, 1:] &= core[:, :, :-1]
    interior[:, :, :-1] &= core[:, :, 1:]
    interior[:, :, [0, -1]] = False
    return np.logical_xor(core, interior, out=interior)  # interior lies within core


class CountedDistances:
    """Distances kept as distinct values (ascending) and how often each occurred."""

    def __init__(self) -> None:
        self.values = np.zeros(0)
        self.counts = np.zeros(0, np.int64)

    def add(self, distances: np.ndarray) -> None:
        values, counts = np.unique(distances, return_counts=True)
        self.values, self.counts = merge_counts(np.concatenate([self.values, values]),
                                                np.concatenate([self.counts, counts]))


def offset_distances(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Lengths in mm of integer voxel offsets ``(n, 3)``
    (:func:`~napari_xaimed.evaluation.lattice.offset_lengths`, the formula of every path)."""
    return offset_lengths(offsets, spacing)


def _z_gaps(z: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Planes from each ``z`` to the plane range ``lo..hi - 1`` (0 inside it)."""
    return np.maximum(np.maximum(lo - z, z - (hi - 1)), 0)


def nearest_offsets(points: np.ndarray, k: int, other: SlabSurfaces, spacing: np.ndarray,
                    max_half: int = MAX_HALF_WINDOW) -> np.ndarray:
    """Integer offsets from ``points`` (surface points of slab ``k``) to their nearest surface
    point of ``other`` (whose surface must not be empty).

    Each slab of ``other`` has its own k-d tree; a window of slabs is looked up slab by slab,
    keeping the nearest point, only for the points that a slab's z-gap does not rule out.
    Looked up first: slab ``k`` alone, then windows of 1, 2, 4, ... slabs on either side.

    Parameters
    ----------
    points : numpy.ndarray
        ``(n, 3)`` box-relative voxel coordinates, all in slab ``k``.
    k : int
    other : SlabSurfaces
    spacing : numpy.ndarray
        Voxel size in mm, ``(z, y, x)``.
    max_half : int
        Widest window (slabs on either side) looked up before the slabs beyond it are looked
        up one at a time without caching.

    Returns
    -------
    numpy.ndarray
        ``(n, 3)`` int64 offsets.
    """
    edges, n_slabs, sz = other.edges, other.n_slabs, float(spacing[0])
    offsets = np.zeros(points.shape, np.int64)
    # The least offset length found so far (lattice lengths: a slab beyond a z-gap of g planes
    # holds no offset shorter than g * sz, the length of (g, 0, 0)).
    best = np.full(len(points), np.inf)
    z = points[:, 0].astype(np.int64)

    def look(j: int, ask: np.ndarray, keep: bool) -> None:
        """Slab ``j``'s nearest points for ``ask`` where they are nearer than the best."""
        ask = ask[_z_gaps(z[ask], int(edges[j]), int(edges[j + 1])) * sz < best[ask]]
        if not len(ask):
            return
        found, tree = other.tree(j, spacing, keep)
        if tree is None:
            return
        offset, length = lattice_nearest(points[ask], found, spacing, tree)
        better = length < best[ask]
        ask = ask[better]
        best[ask] = length[better]
        offsets[ask] = offset[better]

    # Points on both surfaces are at distance 0: no lookup (about half of a rough surface
    # against a copy shifted by a voxel).
    shared = other.on_surface(k, points)
    best[shared] = 0.0
    todo = np.flatnonzero(~shared)
    look(k, todo, True)
    lo = hi = k
    half = 0
    while True:
        # Every point outside the window lies at least this far along z.
        below = (z[todo] - edges[lo] + 1) * sz if lo > 0 else np.inf
        above = (edges[hi + 1] - z[todo]) * sz if hi < n_slabs - 1 else np.inf
        todo = todo[best[todo] > np.minimum(below, above)]
        if not len(todo) or (lo == 0 and hi == n_slabs - 1) or half >= max_half:
            break
        half = max(1, 2 * half)
        wider_lo, wider_hi = max(k - half, 0), min(k + half, n_slabs - 1)
        for j in (*range(wider_lo, lo), *range(hi + 1, wider_hi + 1)):
            look(j, todo, True)
        lo, hi = wider_lo, wider_hi
    if len(todo):
        # The rest against each slab beyond the window, nearest slabs first, read and
        # dropped one at a time.
        beyond = [j for j in range(n_slabs) if not lo <= j <= hi]
        for j in sorted(beyond, key=lambda j: abs(j - k)):
            look(j, todo, False)
    return offsets


def slab_distance_metrics(reference: Any, ref_ids: np.ndarray, prediction: Any,
                          pred_ids: np.ndarray, box: Box, spacing: tuple[float, float, float],
                          nsd_tolerance_mm: float, wanted: tuple[str, ...], planes: int,
                          max_half: int = MAX_HALF_WINDOW) -> dict[str, float]:
    """:func:`~napari_xaimed.evaluation.distances.distance_metrics` of the masks
    ``isin(reference[box], ref_ids)`` and ``isin(prediction[box], pred_ids)``, slab by slab.

    Parameters
    ----------
    reference, prediction : array-like
        3D label maps of one shape (numpy, zarr, dask).
    ref_ids, pred_ids : numpy.ndarray
        The label values of each side's mask; both masks must be non-empty inside ``box``.
    box : tuple of slice
        The crop (the group's bounding box, padded by a voxel as for the in-memory crop).
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    nsd_tolerance_mm : float
    wanted : tuple of str
        Among ``hd``, ``hd95``, ``hd95_directed``, ``assd``, ``nsd``.
    planes : int
        Planes per slab.
    max_half : int
        Widest window of slabs (on either side) looked up at once (:func:`nearest_offsets`).

    Returns
    -------
    dict
        The same values as on the in-memory crop (up to the last bits of the float
        arithmetic).
    """
    edges = slab_edges(box, max(1, int(planes)))
    scale = np.asarray(spacing, np.float64)
    ref = SlabSurfaces(reference, ref_ids, box, edges)
    pred = SlabSurfaces(prediction, pred_ids, box, edges)
    ref_to_pred, pred_to_ref = CountedDistances(), CountedDistances()
    for k in range(len(edges) - 1):
        for side, other, counted in ((ref, pred, ref_to_pred), (pred, ref, pred_to_ref)):
            points = side.points(k)
            if len(points):
                offsets = nearest_offsets(points, k, other, scale, max_half)
                counted.add(offset_distances(offsets, scale))
        ref.keep_only(k, k + 1)
        pred.keep_only(k, k + 1)
    return counted_distance_metrics((ref_to_pred.values, ref_to_pred.counts),
                                    (pred_to_ref.values, pred_to_ref.counts),
                                    nsd_tolerance_mm, wanted)
