"""Surface distances measured from integer voxel offsets: NSD at tolerances that tie with a whole
number of voxels agrees with MONAI's ``compute_surface_dice``, and no metric depends on where the
objects sit (issue 27, item 10).

MONAI 1.6.1 finds surfaces as ``mask ^ binary_erosion(mask)`` (face neighbours, the volume's
outside as background), the voxels of :func:`~napari_xaimed.evaluation.distances.surface`; its
``compute_surface_dice(use_subvoxels=False)`` counts surface voxels within the tolerance,
pooled over both directions, the project's NSD. So the binary masks of one matched pair go to
MONAI unchanged.
"""

from __future__ import annotations

import dataclasses
import warnings

import dask.array as da
import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from napari_xaimed.evaluation import evaluate, evaluate_lazy
from napari_xaimed.evaluation.distances import distance_metrics
from napari_xaimed.evaluation.lattice import nearest_offsets, offset_lengths

WANTED = ("hd", "hd95", "hd95_directed", "assd", "nsd")


def monai(name, reference, prediction, spacing, **kwargs):
    """A MONAI surface metric of two binary 3D masks (one image, one class)."""
    y_pred = torch.as_tensor(np.asarray(prediction, bool)[None, None])
    y = torch.as_tensor(np.asarray(reference, bool)[None, None])
    spacing = tuple(float(s) for s in spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # always_return_as_numpy, MONAI's own
        if name == "nsd":
            value = compute_surface_dice(y_pred, y, include_background=True, spacing=spacing,
                                         use_subvoxels=False, **kwargs)
        else:
            value = compute_hausdorff_distance(y_pred, y, include_background=True,
                                               spacing=spacing, **kwargs)
    return float(value)


def only_row(result):
    (row,) = [r for r in result["all"].rows if r.accepted]
    return row


def line_pair(x0: int, shape=(3, 3, 12)):
    """Reference voxels x = x0..x0+2 and prediction x = x0..x0+4 on one line."""
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[shape[0] // 2, shape[1] // 2, x0:x0 + 3] = 1
    pred[shape[0] // 2, shape[1] // 2, x0:x0 + 5] = 1
    return ref, pred


@pytest.mark.parametrize("shape", [(3, 3, 12), (1, 1, 12)])  # sparse and dense in-memory paths
def test_nsd_at_a_whole_voxel_tolerance_does_not_depend_on_where_the_object_sits(shape):
    """The issue's smallest case: prediction voxels 4 and 5 lie 0.7 and 1.4 mm from the
    reference, so every surface voxel is within 1.4 mm (NSD 1, as MONAI says), at every x."""
    spacing = (1.0, 1.0, 0.7)
    for x0 in range(0, shape[2] - 4):
        ref, pred = line_pair(x0, shape)
        expected = monai("nsd", ref, pred, spacing, class_thresholds=[1.4])
        assert expected == 1.0
        memory = only_row(evaluate(ref, pred, spacing=spacing, nsd_tolerance_mm=1.4))
        lazy = only_row(evaluate_lazy(ref, pred, spacing=spacing, nsd_tolerance_mm=1.4))
        crop = distance_metrics(ref > 0, pred > 0, spacing, 1.4)
        assert (memory.nsd, lazy.nsd, crop["nsd"]) == (1.0, 1.0, 1.0), x0
        assert memory.hd == lazy.hd == crop["hd"] == 2 * 0.7, x0


def blob(rng, shape, centre, radii):
    """A rough ellipsoid (radii in voxels) with a noisy boundary."""
    grid = np.indices(shape, dtype=float)
    d = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)))
    return d + ndi.gaussian_filter(rng.normal(size=shape), 1.2) * 0.6 <= 1.0


def random_pair(seed, shape=(22, 26, 26)):
    """A reference blob and a prediction blob moved and reshaped a little, one instance each."""
    rng = np.random.default_rng(seed)
    centre = np.asarray(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = rng.uniform(4, 8, 3)
    ref = blob(rng, shape, centre, radii)
    pred = blob(rng, shape, centre + rng.integers(-2, 3, 3), radii * rng.uniform(0.85, 1.15, 3))
    return ref.astype(np.uint8), (pred * 2).astype(np.uint8)


# Spacings and tolerances (mm) equal to whole numbers of voxels along an axis, or to a diagonal
# in mm that is a short decimal: the surface voxels at exactly the tolerance must count.
TIES = [
    ((1.0, 1.0, 0.7), [0.7, 1.4, 2.1, 1.0, 2.0]),
    ((3.3, 0.586, 0.586), [0.586, 1.172, 1.758, 3.3]),
    ((0.5, 0.5, 2.5), [0.5, 1.0, 1.5, 2.5]),
    ((1.25, 0.8, 0.8), [0.8, 1.6, 2.4, 1.25]),
    ((0.3, 0.4, 0.1), [0.3, 0.5, 0.4]),  # 0.5 = |(1, 1, 0)| in mm
]


@pytest.mark.parametrize("spacing, tolerances", TIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsd_at_tied_tolerances_equals_monai_on_every_path(spacing, tolerances, seed):
    ref, pred = random_pair(seed)
    moved = False
    for tolerance in tolerances:
        expected = monai("nsd", ref, pred, spacing, class_thresholds=[tolerance])
        # the tie matters: a hair below the tolerance, MONAI counts fewer voxels
        moved |= expected != monai("nsd", ref, pred, spacing,
                                   class_thresholds=[tolerance * (1 - 1e-6)])
        kwargs = {"spacing": spacing, "nsd_tolerance_mm": tolerance, "instance_input": True,
                  "threshold": 0.1, "metrics": WANTED}
        memory = only_row(evaluate(ref, pred, **kwargs))
        lazy = only_row(evaluate_lazy(da.from_array(ref, chunks=(5, 26, 26)), pred, slab=4,
                                      **kwargs))
        crop = distance_metrics(ref > 0, pred > 0, spacing, tolerance)
        assert memory.nsd == lazy.nsd == crop["nsd"] == pytest.approx(expected, abs=1e-7), (
            tolerance)
        # MONAI's distances are float32, and so is its quantile's interpolation
        assert memory.hd == lazy.hd == pytest.approx(monai("hd", ref, pred, spacing), rel=1e-6)
        assert memory.hd95_directed == pytest.approx(
            monai("hd", ref, pred, spacing, percentile=95), rel=1e-5)
        for key in ("hd95", "hd95_directed", "assd"):
            assert getattr(lazy, key) == pytest.approx(getattr(memory, key), rel=1e-12), key
    assert moved


def test_nsd_with_float32_spacings_from_nifti_equals_monai():
    """NIfTI stores spacings as float32: 3 * float32(0.8) = 2.4000000358 mm is still the tie
    with a tolerance of 2.4 mm, as MONAI counts it."""
    spacing = tuple(float(np.float32(s)) for s in (1.25, 0.8, 0.8))
    for seed in range(3):
        ref, pred = random_pair(seed)
        for tolerance in (0.8, 1.6, 2.4):
            expected = monai("nsd", ref, pred, spacing, class_thresholds=[tolerance])
            row = only_row(evaluate(ref, pred, spacing=spacing, nsd_tolerance_mm=tolerance,
                                    instance_input=True, threshold=0.1))
            assert row.nsd == pytest.approx(expected, abs=1e-7), (seed, tolerance)


def place(shape, offset, *masks):
    """Each mask put into an empty volume of ``shape`` at ``offset``."""
    out = []
    for mask in masks:
        volume = np.zeros(shape, mask.dtype)
        volume[tuple(slice(o, o + n) for o, n in zip(offset, mask.shape, strict=True))] = mask
        out.append(volume)
    return out


def test_every_metric_is_bitwise_the_same_wherever_the_pair_sits():
    """Shifting both objects by whole voxels on a 0.7 mm grid changes no bit of HD, HD95, ASSD
    or NSD, on the sparse (shells), dense (crops) and lazy (slabs) paths."""
    spacing = (0.7, 0.7, 0.7)
    rng = np.random.default_rng(7)
    small = (16, 16, 16)
    ref = blob(rng, small, (7.5, 7.5, 7.5), (5, 6, 4)).astype(np.uint8)
    pred = blob(rng, small, (8.5, 7.0, 8.0), (4, 5, 6)).astype(np.uint8)
    pred[1, 1, 14] = 1  # a lone voxel far from the reference: beyond the shells' reach
    # Both tolerances are ties: 2.1 = 3 voxels, 3.5 = |(0, 3, 4)| voxels = 5 voxels.
    for tolerance in (2.1, 3.5):
        kwargs = {"spacing": spacing, "nsd_tolerance_mm": tolerance, "instance_input": True,
                  "threshold": 0.1, "metrics": WANTED}
        seen = {"sparse": set(), "dense": set(), "lazy": set(), "crop": set()}
        for offset in [(0, 0, 0), (1, 0, 0), (0, 3, 0), (0, 0, 5), (3, 4, 1), (9, 7, 11)]:
            big_ref, big_pred = place((26, 24, 28), offset, ref, pred)
            row = only_row(evaluate(big_ref, big_pred, **kwargs))
            seen["sparse"].add(tuple(getattr(row, k) for k in WANTED))
            lazy = only_row(evaluate_lazy(big_ref, big_pred, slab=3, **kwargs))
            seen["lazy"].add(tuple(getattr(lazy, k) for k in WANTED))
            crop = distance_metrics(big_ref > 0, big_pred > 0, spacing, tolerance)
            seen["crop"].add(tuple(crop[k] for k in WANTED))
            tight = (16, 17, 18)
            tight_ref, tight_pred = place(
                tight, tuple(o % (n - 15) for o, n in zip(offset, tight, strict=True)), ref,
                pred)
            assert np.count_nonzero(tight_ref | tight_pred) > tight_ref.size / 8  # dense path
            dense = only_row(evaluate(tight_ref, tight_pred, **kwargs))
            seen["dense"].add(tuple(getattr(dense, k) for k in WANTED))
        for path, values in seen.items():
            assert len(values) == 1, (path, values)
        # Across paths HD and NSD are the same bits; the percentiles and means are summed
        # in other orders (the last bits).
        (sparse,), *others = seen.values()
        for (other,) in others:
            assert (sparse[0], sparse[4]) == (other[0], other[4])
            np.testing.assert_allclose(sparse, other, rtol=1e-12)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 0.7), (1.0, 1.0, 0.7), (3.3, 0.586, 0.586)])
def test_nearest_offsets_are_the_exactly_shortest_with_many_ties(spacing):
    """Against exact integer arithmetic (lengths squared in (mm / 1000)^2): every query's
    offset is one of the shortest, on a lattice where many targets tie (a cube's faces around
    a query), through the k-d tree and by brute force."""
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ring = grid[np.abs(grid).max(axis=1) == 4] + 20  # a cube's faces around (20, 20, 20)
    target = np.concatenate([ring, rng.integers(0, 40, (60, 3))])
    query = np.concatenate([[[20, 20, 20]], rng.integers(0, 40, (200, 3))])
    micro = np.asarray([round(s * 1000) for s in spacing], np.int64)  # spacing in um, exact
    all_squared = (((target[None] - query[:, None]) * micro) ** 2).sum(axis=2)
    tree = cKDTree(target * np.asarray(spacing))
    for offsets, lengths in (nearest_offsets(query, target, spacing, tree=tree),
                             nearest_offsets(query, target, spacing)):
        np.testing.assert_array_equal(lengths, offset_lengths(offsets, spacing))
        reached = (query[:, None] + offsets[:, None] == target[None]).all(axis=2)
        assert reached.any(axis=1).all()  # each offset leads to a target
        np.testing.assert_array_equal(((offsets * micro) ** 2).sum(axis=1),
                                      all_squared.min(axis=1))


def test_lazy_and_in_memory_rows_agree_on_ties():
    """The same pair through evaluate and evaluate_lazy: every field equal, HD and NSD
    bitwise."""
    spacing = (2.5, 0.7, 0.7)
    ref, pred = random_pair(11, shape=(12, 30, 26))
    kwargs = {"spacing": spacing, "nsd_tolerance_mm": 1.4, "instance_input": True,
              "threshold": 0.1, "metrics": WANTED}
    memory = only_row(evaluate(ref, pred, **kwargs))
    lazy = only_row(evaluate_lazy(ref, pred, slab=2, **kwargs))
    a, b = dataclasses.asdict(memory), dataclasses.asdict(lazy)
    for key in a:
        if key in ("hd95", "hd95_directed", "assd", "center_zyx"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)
        else:
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key  # or NaN
