"""Distances between voxels, measured from their integer offsets.

Every surface distance of the evaluation (in memory, batched by shells, slab by slab) is the
length in mm of an integer voxel offset ``o``, computed one way (:func:`offset_lengths`):
``sqrt((o0 s0)**2 + (o1 s1)**2 + (o2 s2)**2)``. Subtracting coordinates in mm instead makes the
value depend on where the voxels sit (``5 * 0.7 - 3 * 0.7 = 1.4000000000000004`` but
``3 * 0.7 - 1 * 0.7 = 1.4``), so an object's HD or NSD changed when it moved by a voxel.

A k-d tree over coordinates in mm still finds the nearest voxels (:func:`nearest_offsets`); its
own distances only select the candidates. Among the voxels it finds equally near up to rounding,
the offset of the smallest length is taken, so each distance is the minimum of
:func:`offset_lengths` over all targets, wherever the two sets sit.

NSD's tolerance is compared at single precision, as MONAI does (:func:`within_tolerance`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

# Up to this many (query, target) pairs all offsets are measured at once, which beats building
# a k-d tree for a few points.
BRUTE_FORCE_PAIRS = 1 << 16
# Query points per k-d tree call (bounds the (points, k, ndim) offset temporaries).
CHUNK = 1 << 15
# Relative slack within which the k-d tree's distances (from coordinates in mm, rounded) count
# as a tie: far above their rounding (about 1e-16 of the coordinates), far below the gap
# between two different lattice lengths.
TIE = 1e-9


def offset_lengths(offsets: np.ndarray, spacing) -> np.ndarray:
    """Lengths in mm of integer voxel offsets ``(n, ndim)``: one formula for every offset, the
    axes summed in order, so equal offsets give bitwise equal lengths wherever they occur."""
    scale = np.asarray(spacing, dtype=np.float64)
    offsets = np.asarray(offsets)
    squared = np.zeros(len(offsets))
    for axis in range(offsets.shape[1]):
        squared += (offsets[:, axis] * scale[axis]) ** 2
    return np.sqrt(squared)


def within_tolerance(lengths: np.ndarray, tolerance_mm: float) -> np.ndarray:
    """Which ``lengths`` count as within the NSD tolerance: compared in float32, as MONAI's
    ``compute_surface_dice`` compares its float32 distances with the threshold.

    A tolerance of a whole number of voxels then counts the voxels at it as within, also when
    the tolerance is typed in decimals and the product rounds above it in float64
    (``3 * 0.8 = 2.4000000000000004 > 2.4``; spacings read from NIfTI are float32:
    ``3 * float32(0.8) = 2.4000000358``). Lengths up to half a float32 step (6e-8 of the
    tolerance) above it count too: below the precision of a spacing stored as float32.
    """
    return np.asarray(lengths, dtype=np.float64).astype(np.float32) <= np.float32(tolerance_mm)


def nearest_offsets(query: np.ndarray, target: np.ndarray, spacing,
                    tree: cKDTree | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The offset from each query voxel to its nearest target voxel, and its length in mm.

    Parameters
    ----------
    query, target : numpy.ndarray
        ``(n, ndim)`` and ``(m, ndim)`` integer voxel coordinates in one frame; ``m > 0``.
    spacing : sequence of float
        Voxel size in mm per axis.
    tree : scipy.spatial.cKDTree, optional
        A tree of ``target * spacing`` already built.

    Returns
    -------
    (offsets, lengths)
        ``(n, ndim)`` int64 offsets ``target - query`` and their :func:`offset_lengths`; each
        length is the least over all targets (ties of the tree's rounded distances resolved by
        the exact lengths).
    """
    query = np.asarray(query, dtype=np.int64)
    target = np.asarray(target, dtype=np.int64)
    if tree is None and len(query) * len(target) <= BRUTE_FORCE_PAIRS:
        return _brute_force(query, target, spacing)
    scale = np.asarray(spacing, dtype=np.float64)
    if tree is None:  # unbalanced, uncompacted: built and queried faster here
        tree = cKDTree(target * scale, balanced_tree=False, compact_nodes=False)
    offsets = np.zeros(query.shape, np.int64)
    lengths = np.zeros(len(query))
    for start in range(0, len(query), CHUNK):
        part = slice(start, start + CHUNK)
        offsets[part], lengths[part] = _tree_nearest(query[part], target, scale, tree)
    return offsets, lengths


def _brute_force(query: np.ndarray, target: np.ndarray, spacing
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every offset measured: the least length by :func:`offset_lengths`' own arithmetic."""
    scale = np.asarray(spacing, dtype=np.float64)
    squared = np.zeros((len(query), len(target)))
    for axis in range(query.shape[1]):  # the same sum, in the same order
        squared += ((target[None, :, axis] - query[:, axis, None]) * scale[axis]) ** 2
    best = squared.argmin(axis=1) if len(query) else np.zeros(0, np.intp)
    offsets = target[best] - query
    return offsets, offset_lengths(offsets, scale)


def _tree_nearest(query: np.ndarray, target: np.ndarray, scale: np.ndarray, tree: cKDTree
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The k-d tree's nearest target, unless the second nearest ties with it: then the
    nearest ones are widened (k = 4, 8, 16, ...) while the k-th still ties, and the least
    exact length among the tied ones is taken."""
    m = len(target)
    mm = query * scale
    k = min(2, m)
    found, index = tree.query(mm, k=k)
    found, index = found.reshape(len(query), k), index.reshape(len(query), k)
    choice = index[:, 0].copy()
    slack = TIE * (found[:, 0] + np.abs(mm).max(axis=1) + 1.0)
    todo = np.flatnonzero(found[:, -1] <= found[:, 0] + slack) if k > 1 else choice[:0]
    k = 4
    while len(todo):
        kk = min(k, m)
        near, which = tree.query(mm[todo], k=kk)
        tied = near <= near[:, :1] + slack[todo, None]
        candidates = target[which] - query[todo, None, :]
        exact = offset_lengths(candidates.reshape(-1, query.shape[1]), scale).reshape(
            len(todo), kk)
        exact[~tied] = np.inf
        choice[todo] = which[np.arange(len(todo)), exact.argmin(axis=1)]
        todo = todo[tied[:, -1]] if kk < m else todo[:0]  # the k-th still tied: maybe more
        k *= 2
    offsets = target[choice] - query
    return offsets, offset_lengths(offsets, scale)
