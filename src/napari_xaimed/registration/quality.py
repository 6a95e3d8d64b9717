"""Similarity and overlap figures for judging a registration before and after."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.lazy import slab_size, z_slabs

# Voxels per chunk of the float64 work: the figures of a CT-sized pair (512 x 512 x 300) go
# through z-slabs instead of whole-volume float64 copies (2.4 GB each).
CHUNK_VOXELS = 1_000_000


def _slabs(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None
           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The voxels of ``a`` and ``b`` (flat, over ``mask`` when given), a z-slab at a time."""
    if a.shape != b.shape or (mask is not None and mask.shape != a.shape):
        raise XaimedError(f"images differ in shape: {a.shape} vs {b.shape}"
                          + ("" if mask is None else f" (mask {mask.shape})") + ".")
    if a.ndim == 0:
        a, b = a.reshape(1), b.reshape(1)
        mask = None if mask is None else mask.reshape(1)
    for start, stop in z_slabs(a.shape[0], slab_size(a.shape, 1, budget=CHUNK_VOXELS)):
        zs = slice(start, stop)
        if mask is None:
            yield a[zs].ravel(), b[zs].ravel()
        else:
            yield a[zs][mask[zs]], b[zs][mask[zs]]


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation (Pearson's r) of two images over ``mask``; NaN when one
    is constant there.

    Two passes over z-slabs in float64 (means, then centred sums): no whole-volume copy.
    """
    a, b = np.asarray(a), np.asarray(b)
    mask = None if mask is None else np.asarray(mask, bool)
    n, sx, sy = 0, 0.0, 0.0
    for x, y in _slabs(a, b, mask):
        n += x.size
        sx += float(np.sum(x, dtype=np.float64))
        sy += float(np.sum(y, dtype=np.float64))
    if n == 0:
        return float("nan")
    mx, my = sx / n, sy / n
    sxx = syy = sxy = 0.0
    for x, y in _slabs(a, b, mask):
        dx = x.astype(np.float64)
        dx -= mx
        dy = y.astype(np.float64)
        dy -= my
        sxx += float(np.dot(dx, dx))
        syy += float(np.dot(dy, dy))
        sxy += float(np.dot(dx, dy))
    denom = np.sqrt(sxx * syy)
    return float(sxy / denom) if denom > 0 else float("nan")


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None,
                       bins: int = 32) -> float:
    """Mutual information (nats) of the joint intensity histogram (``bins`` x ``bins``, each
    axis spanning that image's range over ``mask``).

    Ranges first, then the joint histogram accumulated over z-slabs: the same counts as one
    pass over the whole volume, without its int64 and float64 copies.
    """
    a, b = np.asarray(a), np.asarray(b)
    mask = None if mask is None else np.asarray(mask, bool)
    ranges = [np.inf, -np.inf, np.inf, -np.inf]
    count = 0
    for x, y in _slabs(a, b, mask):
        if x.size:
            count += x.size
            ranges = [min(ranges[0], float(x.min())), max(ranges[1], float(x.max())),
                      min(ranges[2], float(y.min())), max(ranges[3], float(y.max()))]
    if count == 0:
        return float("nan")
    joint = np.zeros(bins * bins, np.int64)
    for x, y in _slabs(a, b, mask):
        # the same bins as np.histogram2d(x, y, bins) (tested), by one bincount: several
        # times faster
        cells = _bin(x, bins, *ranges[:2]) * bins + _bin(y, bins, *ranges[2:])
        joint += np.bincount(cells, minlength=bins * bins)
    p = joint.reshape(bins, bins).astype(np.float64)
    p /= p.sum()
    px, py = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (px @ py)[nz])))


def _bin(values: np.ndarray, bins: int, lo: float | None = None, hi: float | None = None
         ) -> np.ndarray:
    """Bin index 0..bins-1 of each value over ``[lo, hi]`` (default: the values' range; the
    maximum in the last bin)."""
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        return np.zeros(values.size, np.int64)
    index = ((values.astype(np.float64) - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.minimum(index, bins - 1)


def dice_per_label(reference: np.ndarray, other: np.ndarray) -> dict[int, float]:
    """Dice of each nonzero label of ``reference`` with the same label in ``other``."""
    # here, not at the top: the evaluation package's import (0.6 s of scipy) is paid only by
    # the one figure that needs it, not by every ``import napari_xaimed.registration``
    from napari_xaimed.components.overlap import mask_dice

    if reference.shape != other.shape:
        raise XaimedError(f"label maps differ in shape: {reference.shape} vs {other.shape}.")
    out = {}
    for label in np.unique(reference):
        if label == 0:
            continue
        out[int(label)] = mask_dice(reference == label, other == label)
    return out


def target_registration_error(fixed_points: np.ndarray, moving_points: np.ndarray,
                              displacement_at_fixed: np.ndarray | None) -> dict[str, float]:
    """Mean and max distance (mm) between corresponding landmarks.

    ``displacement_at_fixed`` is the field sampled at the fixed landmarks (None: before
    registration, the identity in world coordinates): the fixed landmark ``p`` maps to
    ``p + u(p)`` in moving space, which should land on its moving partner.
    """
    f = np.atleast_2d(np.asarray(fixed_points, np.float64))
    m = np.atleast_2d(np.asarray(moving_points, np.float64))
    if f.shape != m.shape or f.shape[1] != 3 or len(f) == 0:
        raise XaimedError(
            f"landmarks must be two (n, 3) arrays of corresponding points in mm, n >= 1; got "
            f"{f.shape} fixed and {m.shape} moving points."
        )
    mapped = f if displacement_at_fixed is None else f + displacement_at_fixed
    d = np.linalg.norm(mapped - m, axis=1)
    return {"tre_mean_mm": float(d.mean()), "tre_max_mm": float(d.max())}
