"""Batched shell search of surface distances against a brute-force computation per pair."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from napari_xaimed.evaluation import shells
from napari_xaimed.evaluation.distances import (
    distance_metrics,
    grouped_distance_metrics,
    surface,
)
from napari_xaimed.evaluation.footprints import VoxelCrops, scan


def blob(rng, shape, centre, radius):
    """A rough random blob: a ball with a noisy boundary, one component."""
    grid = np.indices(shape, dtype=float)
    d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    noise = ndi.gaussian_filter(rng.normal(size=shape), 1.5) * 3
    mask = d + noise <= radius
    labels, n = ndi.label(mask)
    if n > 1:
        mask = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:])
    return mask


def pair_maps(seed, shape=(30, 34, 38)):
    """Reference and prediction maps with partnered instances: overlapping, far apart (beyond
    the shells' reach), touching the volume's edges, and of very different sizes."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, np.uint16)
    places = [  # (reference centre, radius, prediction centre, radius)
        ((8, 9, 9), 5, (9, 10, 8), 5),          # ordinary overlap
        ((22, 9, 28), 4, (22, 9, 36), 3),       # partner 8 voxels away: only the k-d tree
        ((0, 30, 5), 5, (1, 33, 6), 6),         # cut by three volume faces
        ((22, 25, 12), 6, (21, 24, 13), 2),     # small prediction inside a large reference
    ]
    for k, (rc, rr, pc, pr) in enumerate(places, start=1):
        ref[blob(rng, shape, rc, rr) & (ref == 0)] = k
        pred[blob(rng, shape, pc, pr) & (pred == 0)] = k
    return ref, pred, len(places)


def brute_force(ref_mask, pred_mask, spacing):
    a = np.argwhere(surface(ref_mask)) * spacing
    b = np.argwhere(surface(pred_mask)) * spacing
    d = cdist(a, b)
    return d.min(axis=1), d.min(axis=0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9), (0.5, 0.5, 3.0)])
@pytest.mark.parametrize("slabs", [1, 4, 64])
def test_shell_distances_equal_brute_force(spacing, slabs, monkeypatch):
    monkeypatch.setattr(shells, "SLABS", slabs)
    monkeypatch.setattr(shells.nearest_partner_surface, "__defaults__", (slabs,))
    monkeypatch.setattr(shells, "SLAB_BYTES", 1)  # as many slabs as asked, on a small volume
    ref, pred, n = pair_maps(seed=int(spacing[0] * 10))
    table, crops = scan(ref, pred, n, n)
    assert isinstance(crops, VoxelCrops)
    refs = np.arange(1, n + 1)
    a, a_pair, b, b_pair = shells.pair_surface_distances(ref, pred, crops, refs, refs[::-1],
                                                         spacing)
    for i, (r, p) in enumerate(zip(refs, refs[::-1], strict=True)):
        want_a, want_b = brute_force(ref == r, pred == p, spacing)
        # Surface voxels come in raster order, as np.argwhere gives them.
        np.testing.assert_allclose(a[a_pair == i], want_a, rtol=0, atol=1e-9)
        np.testing.assert_allclose(b[b_pair == i], want_b, rtol=0, atol=1e-9)


def test_lattice_offsets_are_every_offset_within_the_radius_shortest_first():
    spacing = (0.8, 1.7, 0.5)
    offsets, lengths = shells.lattice_offsets(spacing, 2.0)
    grid = np.stack(np.meshgrid(*[np.arange(-6, 7)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expected = grid[np.sqrt(((grid * spacing) ** 2).sum(1)) <= 2.0]
    assert sorted(map(tuple, offsets)) == sorted(map(tuple, expected))
    assert np.all(np.diff(lengths) >= 0)
    assert tuple(offsets[0]) == (0, 0, 0)
    assert len(shells.lattice_offsets((1.0, 1.0, 1.0), 3.0)[0]) == 123


def test_grouped_metrics_equal_the_per_pair_ones():
    rng = np.random.default_rng(0)
    sizes_a, sizes_b = [1, 7, 40, 2], [3, 1, 55, 2]
    a = [rng.gamma(1.5, 1.0, k).round(1) for k in sizes_a]  # ties, as on a lattice
    b = [rng.gamma(1.5, 1.0, k).round(1) for k in sizes_b]
    group_a = np.repeat(np.arange(4), sizes_a)
    group_b = np.repeat(np.arange(4), sizes_b)
    order_a, order_b = rng.permutation(len(group_a)), rng.permutation(len(group_b))
    wanted = ("hd", "hd95", "hd95_directed", "assd", "nsd")
    table = grouped_distance_metrics(np.concatenate(a)[order_a], group_a[order_a],
                                     np.concatenate(b)[order_b], group_b[order_b], 4, 1.0,
                                     wanted)
    for i in range(4):
        pooled = np.concatenate([a[i], b[i]])
        expected = {
            "hd": max(a[i].max(), b[i].max()),
            "hd95": np.percentile(pooled, 95),
            "hd95_directed": max(np.percentile(a[i], 95), np.percentile(b[i], 95)),
            "assd": (a[i].mean() + b[i].mean()) / 2,
            "nsd": np.mean(pooled <= 1.0),
        }
        for key in wanted:
            assert table[key][i] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key


def test_grouped_metrics_equal_distance_metrics_on_masks():
    """The batched route and the crop route of the evaluation agree on real masks."""
    ref, pred, n = pair_maps(seed=5)
    spacing = (1.2, 0.8, 1.0)
    table, crops = scan(ref, pred, n, n)
    refs = np.arange(1, n + 1)
    a, a_pair, b, b_pair = shells.pair_surface_distances(ref, pred, crops, refs, refs,
                                                         spacing)
    wanted = ("hd", "hd95", "hd95_directed", "assd", "nsd")
    batched = grouped_distance_metrics(a, a_pair, b, b_pair, n, 1.5, wanted)
    for i, k in enumerate(refs):
        one = distance_metrics(ref == k, pred == k, spacing, 1.5, wanted)
        for key in wanted:
            assert batched[key][i] == pytest.approx(one[key], rel=1e-12), key


@pytest.mark.parametrize("seed", range(3))
def test_grouped_metrics_are_numpys_bits(seed):
    """In the order the shells give them (grouped by pair, each group in voxel order), the
    batched HD95s and ASSD are np.percentile's and ndarray.mean's own bits, as on each pair's
    crop: not a left-to-right bincount sum or a rewritten percentile index, which differ in the
    last bits (and moved the Voronoi rows' values when they were batched)."""
    rng = np.random.default_rng(seed)
    n = 200
    sizes_a, sizes_b = rng.integers(1, 400, n), rng.integers(1, 400, n)
    a = [np.sqrt(rng.integers(0, 60, k)) * 0.7 for k in sizes_a]
    b = [rng.random(k) * 9 for k in sizes_b]
    wanted = ("hd", "hd95", "hd95_directed", "assd", "nsd")
    table = grouped_distance_metrics(np.concatenate(a), np.repeat(np.arange(n), sizes_a),
                                     np.concatenate(b), np.repeat(np.arange(n), sizes_b), n,
                                     1.0, wanted)
    expected = {
        "hd95": [np.percentile(np.concatenate([x, y]), 95) for x, y in zip(a, b, strict=True)],
        "hd95_directed": [max(np.percentile(x, 95), np.percentile(y, 95))
                          for x, y in zip(a, b, strict=True)],
        "assd": [(x.mean() + y.mean()) / 2 for x, y in zip(a, b, strict=True)],
    }
    for key, values in expected.items():
        np.testing.assert_array_equal(table[key], values, err_msg=key)
