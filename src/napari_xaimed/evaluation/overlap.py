"""The overlap table: every overlapping (reference, prediction) instance pair, from one pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_xaimed.components.overlap import mask_dice  # noqa: F401 - also importable here

# Below this many (n_ref + 1) * (n_pred + 1) cells a dense bincount is faster than sorting.
_DENSE_CELLS = 2_000_000


@dataclass
class OverlapTable:
    """Sizes of all instances and intersections of all overlapping pairs.

    Instances are numbered ``1..n`` (compact maps); ``pair_ref``/``pair_pred`` hold those numbers.

    Attributes
    ----------
    ref_sizes, pred_sizes : numpy.ndarray
        Voxel counts, index 0 unused (background).
    pair_ref, pair_pred, pair_inter : numpy.ndarray
        One entry per overlapping pair, sorted by (ref, pred).
    """

    ref_sizes: np.ndarray
    pred_sizes: np.ndarray
    pair_ref: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray

    @property
    def n_ref(self) -> int:
        return len(self.ref_sizes) - 1

    @property
    def n_pred(self) -> int:
        return len(self.pred_sizes) - 1

    def scores(self, metric: str) -> np.ndarray:
        """IoU or Dice of every overlapping pair."""
        return pair_score(self.pair_inter, self.ref_sizes[self.pair_ref],
                          self.pred_sizes[self.pair_pred], metric)


def pair_score(inter, ref_size, pred_size, metric: str):
    """IoU or Dice from counts (arrays or scalars)."""
    inter = np.asarray(inter, dtype=np.float64)
    total = np.asarray(ref_size, dtype=np.float64) + np.asarray(pred_size, dtype=np.float64)
    if metric == "iou":
        return inter / (total - inter)
    if metric == "dice":
        return 2.0 * inter / total
    raise ValueError(f"unknown matching metric {metric!r}")


def score_value(inter: int, ref_size: int, pred_size: int, metric: str) -> float:
    """:func:`pair_score` of one pair in plain floats: the same IEEE operations in the same
    order, so the same value, without numpy's per-call cost (it runs once per matched group)."""
    inter_f = float(inter)
    total = float(ref_size) + float(pred_size)
    if metric == "iou":
        return inter_f / (total - inter_f)
    if metric == "dice":
        return 2.0 * inter_f / total
    raise ValueError(f"unknown matching metric {metric!r}")


def _decode(unique: np.ndarray, inter: np.ndarray, stride: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return ((unique // stride).astype(np.int64), (unique % stride).astype(np.int64),
            inter.astype(np.int64))


def pair_table(keys: np.ndarray, n_ref: int, n_pred: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pair_ref, pair_pred, pair_inter)`` from one key ``ref * (n_pred + 1) + pred`` per
    overlapping voxel, sorted by (ref, pred)."""
    stride = n_pred + 1
    if (n_ref + 1) * stride <= _DENSE_CELLS:
        counts = np.bincount(keys, minlength=(n_ref + 1) * stride)
        unique = np.flatnonzero(counts)
        return _decode(unique, counts[unique], stride)
    unique, inter = np.unique(keys, return_counts=True)
    return _decode(unique, inter, stride)


def overlap_table(reference: np.ndarray, prediction: np.ndarray, n_ref: int, n_pred: int
                  ) -> OverlapTable:
    """Build the table from two compact instance maps (values ``0..n_ref`` and ``0..n_pred``).

    Works through slabs of the volume so the temporary arrays stay small (peak memory about a
    slab's worth of 64-bit keys, not a volume's). :func:`~napari_xaimed.evaluation.footprints.scan`
    is faster when the foreground is sparse.
    """
    ref_sizes = np.zeros(n_ref + 1, np.int64)
    pred_sizes = np.zeros(n_pred + 1, np.int64)
    stride = n_pred + 1
    dense = (n_ref + 1) * stride <= _DENSE_CELLS
    counts = np.zeros((n_ref + 1) * stride, np.int64) if dense else None
    sparse_keys = []
    slab = max(1, 2_000_000 // max(1, int(np.prod(reference.shape[1:]))))
    for start in range(0, reference.shape[0], slab):
        ref = reference[start:start + slab].ravel()
        pred = prediction[start:start + slab].ravel()
        ref_sizes += np.bincount(ref, minlength=n_ref + 1)
        pred_sizes += np.bincount(pred, minlength=n_pred + 1)
        both = (ref > 0) & (pred > 0)
        keys = ref[both].astype(np.int64) * stride + pred[both]
        if dense:
            counts += np.bincount(keys, minlength=counts.size)
        else:
            sparse_keys.append(keys)
    if dense:
        unique = np.flatnonzero(counts)
        pair_ref, pair_pred, pair_inter = _decode(unique, counts[unique], stride)
    else:
        all_keys = np.concatenate(sparse_keys) if sparse_keys else np.zeros(0, np.int64)
        pair_ref, pair_pred, pair_inter = pair_table(all_keys, n_ref, n_pred)
    return OverlapTable(ref_sizes=ref_sizes, pred_sizes=pred_sizes, pair_ref=pair_ref,
                        pair_pred=pair_pred, pair_inter=pair_inter)
