"""The voxels nonzero in either of two label maps, and their values, in one read of both maps.

Where most of a volume is background (lesions, nodules, cells), everything the evaluation needs
comes from these few voxels. Finding them is the one pass over the whole volume, so it is done
at about the speed of reading the maps: both are read as 64-bit words (4 voxels of uint16, 2 of
int32), OR-ed into a small buffer that stays in cache, and only the words with a nonzero bit are
kept, while still in cache, and read back as voxels. So the values at the foreground come with
it, and no second pass gathers them.
"""

from __future__ import annotations

import numpy as np

# Voxels per step: a step's word buffer (the maps' item size per voxel, 512 KB for uint16)
# stays in the CPU cache.
WORD_CHUNK = 1 << 18
# Voxels per step of the plain path (maps of different item sizes, or not contiguous).
SLAB = 2_000_000


def _index_dtype(size: int) -> type:
    return np.int32 if size < 2**31 else np.int64


def _by_words(ref: np.ndarray, pred: np.ndarray, limit: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every voxel of each 64-bit word with a nonzero bit in either map (a superset of the
    foreground, at most ``8 / itemsize`` voxels per foreground voxel) and both maps' values
    there, or None once more than ``limit`` words have one (each holds a foreground voxel)."""
    per = 8 // ref.itemsize
    whole = ref.size - ref.size % per
    ref_words, pred_words = ref[:whole].view(np.uint64), pred[:whole].view(np.uint64)
    dtype = _index_dtype(ref.size)
    step = max(1, WORD_CHUNK // per)
    word_buffer = np.empty(min(step, ref_words.size), np.uint64)
    flag_buffer = np.empty(len(word_buffer), bool)
    hits, ref_parts, pred_parts, total = [], [], [], 0
    for start in range(0, ref_words.size, step):
        ref_chunk, pred_chunk = ref_words[start:start + step], pred_words[start:start + step]
        n = len(ref_chunk)
        np.bitwise_or(ref_chunk, pred_chunk, out=word_buffer[:n])
        hit = np.flatnonzero(np.not_equal(word_buffer[:n], 0, out=flag_buffer[:n]))
        total += hit.size
        if total > limit:
            return None
        if hit.size:  # the words are still in cache: take them now
            ref_parts.append(ref_chunk[hit])
            pred_parts.append(pred_chunk[hit])
            hits.append(hit.astype(dtype) + dtype(start))
    words = np.concatenate(hits) if hits else np.zeros(0, dtype)
    index = (words[:, None] * dtype(per) + np.arange(per, dtype=dtype)).reshape(-1)
    # A word's bytes are its voxels' bytes in memory order, whatever the byte order.
    ref_values = (np.concatenate(ref_parts) if ref_parts else np.zeros(0, np.uint64)
                  ).view(ref.dtype)
    pred_values = (np.concatenate(pred_parts) if pred_parts else np.zeros(0, np.uint64)
                   ).view(pred.dtype)
    if whole < ref.size:  # the last voxels, short of a word
        index = np.concatenate([index, np.arange(whole, ref.size, dtype=dtype)])
        ref_values = np.concatenate([ref_values, ref[whole:]])
        pred_values = np.concatenate([pred_values, pred[whole:]])
    return index, ref_values, pred_values


def _by_slabs(ref: np.ndarray, pred: np.ndarray, limit: int) -> np.ndarray | None:
    """Flat indices of the foreground voxels from boolean slabs, or None past ``limit``."""
    dtype = _index_dtype(ref.size)
    slab = max(1, min(SLAB, ref.size // 16))
    parts, total = [], 0
    for start in range(0, ref.size, slab):
        union = ref[start:start + slab] != 0
        union |= pred[start:start + slab] != 0
        part = np.flatnonzero(union).astype(dtype) + dtype(start)
        total += part.size
        if total > limit:
            return None
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def foreground(ref_map: np.ndarray, pred_map: np.ndarray, limit: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The voxels nonzero in either map and the two maps' values there.

    Parameters
    ----------
    ref_map, pred_map : numpy.ndarray
        Integer label maps of one shape.
    limit : int
        Most foreground voxels wanted: past it the search stops.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray) or None
        Flat indices in increasing order (int32 when the volume has fewer than 2**31 voxels),
        the reference values and the prediction values at them; None when more than ``limit``
        voxels are nonzero in either map.
    """
    ref = ref_map.reshape(-1)  # a view when contiguous
    pred = pred_map.reshape(-1)
    words = (ref.itemsize == pred.itemsize and ref.itemsize in (1, 2, 4, 8)
             and ref.flags.c_contiguous and pred.flags.c_contiguous)
    if not words:
        index = _by_slabs(ref, pred, limit)
        return None if index is None else (index, ref[index], pred[index])
    found = _by_words(ref, pred, limit)
    if found is None:
        return None
    index, ref_values, pred_values = found
    keep = ref_values != 0  # drop the background voxels that shared a word with foreground
    keep |= pred_values != 0
    keep = np.flatnonzero(keep)  # then take: faster than three boolean selections
    if keep.size > limit:
        return None
    return index.take(keep), ref_values.take(keep), pred_values.take(keep)
