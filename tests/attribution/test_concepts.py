"""Concept explanations (TCAV through Captum, regression concept vectors) on models whose
answer is known by construction, and radiomics features against closed forms and
scikit-image."""

import numpy as np
import pytest
import torch
from skimage.feature import graycomatrix, graycoprops

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.concepts.directional import tcav
from napari_xaimed.concepts.radiomics import FEATURES, glcm, region_features
from napari_xaimed.concepts.rcv import regression_concepts

SHAPE = (12, 12, 12)
NO_SCALING = {"scaling": "none"}


class Brightness(torch.nn.Module):
    """Class 1 scores the summed intensity of a one-channel map (``rectified``: of its
    positive part), class 0 its negative: the gradient of class 1 with respect to the map is
    +1 at every voxel (at the positive voxels), so any direction that brightens raises it."""

    def __init__(self, rectified: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
        self.rectified = rectified

    def forward(self, x):
        a = self.conv(x)
        total = (a.clamp(min=0) if self.rectified else a).flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([-total, total], dim=1)


def _volumes(n, level, seed):
    rng = np.random.default_rng(seed)
    return [(level + 0.1 * rng.normal(size=SHAPE)).astype(np.float32) for _ in range(n)]


def test_tcav_of_a_concept_that_raises_the_score_is_one_and_significant():
    # rectified: each input's gradient covers its own positive voxels, so random CAVs raise
    # some inputs' scores and lower others' (a null around 0.5)
    model = Brightness(rectified=True).eval()
    rng = np.random.default_rng(5)
    pool = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(16)]
    inputs = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(10)]
    kwargs = dict(random_pool=pool, layers=["conv"], runs=6, preprocessing=NO_SCALING,
                  device="cpu")
    result = tcav(model, inputs, {"bright": _volumes(6, 2.0, 2)}, target=1, **kwargs)
    (score,) = result.scores
    assert score.layer == "conv" and result.target == 1
    # the CAV points to brighter maps, and class 1 rises with brightness wherever it is
    # positive
    assert score.scores == (1.0,) * 6 and score.magnitude > 0
    assert 0.2 < np.mean(score.random_scores) < 0.8
    assert score.significant and score.p_value < 0.05
    # for the other class the concept lowers the score: TCAV 0
    other = tcav(model, inputs, {"bright": _volumes(6, 2.0, 2)}, target=0, **kwargs)
    assert other.scores[0].score < 0.2 and other.scores[0].significant
    table = result.to_dataframe()
    assert list(table["concept"]) == ["bright"] and bool(table["significant"][0])


def test_tcav_concepts_given_as_masks_and_the_default_layer():
    model = Brightness().eval()
    masks = []
    for i in range(4):
        m = np.zeros(SHAPE, bool)
        m[2 + i:6 + i, 3:8, 3:8] = True
        masks.append((np.full(SHAPE, 3.0, np.float32) * m + 0.01 * i, m))
    pool = _volumes(10, 0.0, 7)
    result = tcav(model, _volumes(3, 0.0, 1), {"bright region": masks}, random_pool=pool,
                  target=1, runs=2, preprocessing=NO_SCALING, device="cpu")
    assert result.layers == ["conv"]  # the last spatial feature map
    assert result.scores[0].score == 1.0


def test_tcav_bad_input_says_what_to_fix():
    model = Brightness().eval()
    pool = _volumes(10, 0.0, 7)
    with pytest.raises(XaimedError, match="at least 2"):
        tcav(model, _volumes(2, 0.0, 1), {"one": _volumes(1, 2.0, 2)}, random_pool=pool)
    with pytest.raises(XaimedError, match="random pool has 3"):
        tcav(model, _volumes(2, 0.0, 1), {"c": _volumes(4, 2.0, 2)}, random_pool=pool[:3])
    with pytest.raises(XaimedError, match="no layer"):
        tcav(model, _volumes(2, 0.0, 1), {"c": _volumes(2, 2.0, 2)}, random_pool=pool,
             layers=["nope"])
    with pytest.raises(XaimedError, match="mask is empty"):
        tcav(model, _volumes(2, 0.0, 1),
             {"c": [(np.ones(SHAPE), np.zeros(SHAPE, bool))] * 2}, random_pool=pool)


def test_regression_concept_of_mean_intensity_is_relevant_and_noise_is_not():
    model = Brightness(rectified=True).eval()
    rng = np.random.default_rng(0)
    levels = np.linspace(-1, 1, 12)
    volumes = [(lv + 0.05 * rng.normal(size=SHAPE)).astype(np.float32) for lv in levels]
    features = {"mean intensity": [float(v.mean()) for v in volumes],
                "noise": rng.normal(size=len(volumes)).tolist()}
    result = regression_concepts(model, volumes, features, target=1, permutations=30,
                                 preprocessing=NO_SCALING, device="cpu")
    mean, noise = result.concepts
    assert result.layer == "conv"
    # one channel: the RCV is +1, and the score's derivative along it (a uniform shift of
    # the map) is the number of voxels the rectifier passes
    np.testing.assert_allclose(mean.sensitivities, [np.sum(v > 0) for v in volumes])
    assert mean.r2 > 0.95
    assert mean.significant and mean.bidirectional_relevance > 0
    assert not noise.significant and noise.r2 < 0.5
    assert set(result.to_dataframe()["feature"]) == {"mean intensity", "noise"}


def test_regression_concepts_bad_input():
    model = Brightness().eval()
    volumes = _volumes(6, 0.0, 3)
    with pytest.raises(XaimedError, match="one value per volume"):
        regression_concepts(model, volumes, {"a": [1.0, 2.0]})
    with pytest.raises(XaimedError, match="same for every volume"):
        regression_concepts(model, volumes, {"a": [1.0] * 6})
    with pytest.raises(XaimedError, match="at least 5"):
        regression_concepts(model, volumes[:3], {"a": [1.0, 2.0, 3.0]})


def _ball(radius, shape=(41, 41, 41)):
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (grid ** 2).sum(axis=0) <= radius ** 2


def test_shape_features_against_closed_forms():
    ball = _ball(15)
    f = region_features(np.ones(ball.shape), ball, spacing=(1.0, 1.0, 1.0))
    assert set(f) == set(FEATURES)
    assert f["volume_mm3"] == ball.sum()
    assert f["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 15 ** 3, rel=0.01)
    # the marching-cubes mesh of a voxelised ball keeps some of its staircase: ~9 % more
    # area than the smooth sphere (pyradiomics' mesh does the same), so sphericity ~0.92
    assert 1.0 < f["surface_mm2"] / (4 * np.pi * 15 ** 2) < 1.12
    assert 0.88 < f["sphericity"] < 1.0
    cube = np.zeros((30, 30, 30), bool)
    cube[5:25, 5:25, 5:25] = True
    g = region_features(np.ones(cube.shape), cube, spacing=(0.5, 0.5, 0.5))
    assert g["volume_mm3"] == pytest.approx(10 ** 3)
    # sphericity of a cube: (pi / 6)^(1/3) = 0.806; the mesh cuts its edges and corners
    # (582 instead of 600 mm²), which raises it a little
    assert g["surface_mm2"] == pytest.approx(600, rel=0.05)
    assert g["sphericity"] == pytest.approx((np.pi / 6) ** (1 / 3), abs=0.04)
    assert g["sphericity"] < f["sphericity"]


def test_first_order_and_texture_against_scipy_and_skimage():
    from scipy import stats

    rng = np.random.default_rng(1)
    image = rng.integers(0, 8, size=(1, 20, 24)).astype(np.float64)
    image[0, 0, 0], image[0, 0, 1] = 0, 7  # the range spans the 8 grey levels
    region = np.ones(image.shape, bool)
    f = region_features(image, region, bins=8)
    values = image.ravel()
    assert f["mean"] == pytest.approx(values.mean()) and f["std"] == pytest.approx(values.std())
    assert f["skewness"] == pytest.approx(stats.skew(values))
    # IBSI's kurtosis (IPH6) is the excess kurtosis: Pearson's minus 3
    assert f["kurtosis"] == pytest.approx(stats.kurtosis(values, fisher=True, bias=True))
    _, counts = np.unique(values, return_counts=True)
    assert f["entropy"] == pytest.approx(stats.entropy(counts, base=2))
    # one slice, one direction: scikit-image's 2D GLCM at distance 1, angle 0
    grey = image.astype(np.int64)
    ours = glcm(grey, region, 8, (0, 0, 1))
    theirs = graycomatrix(grey[0].astype(np.uint8), [1], [0], levels=8, symmetric=True)
    np.testing.assert_array_equal(ours, theirs[:, :, 0, 0])
    p = theirs.astype(float) / theirs.sum()
    i, j = np.indices((8, 8))
    assert (ours / ours.sum() * (i - j) ** 2).sum() == pytest.approx(
        graycoprops(p, "contrast")[0, 0])
    assert (ours / ours.sum() / (1 + (i - j) ** 2)).sum() == pytest.approx(
        graycoprops(p, "homogeneity")[0, 0])


def test_kurtosis_is_the_excess_kurtosis_ibsi_defines():
    # hand-computed: two values, half each: m4 / m2² = 1, excess kurtosis 1 - 3 = -2; a
    # normal sample's is near 0 (Pearson's near 3)
    image = np.zeros((2, 4, 4))
    image[1] = 1.0
    region = np.ones(image.shape, bool)
    assert region_features(image, region)["kurtosis"] == pytest.approx(-2.0)
    normal = np.random.default_rng(2).normal(size=(20, 20, 20))
    assert abs(region_features(normal, np.ones(normal.shape, bool))["kurtosis"]) < 0.2


def test_region_features_bad_input():
    with pytest.raises(XaimedError, match="empty"):
        region_features(np.ones((4, 4, 4)), np.zeros((4, 4, 4), bool))
    with pytest.raises(XaimedError, match="shape"):
        region_features(np.ones((4, 4, 4)), np.ones((4, 4, 3), bool))


def test_case_features_from_a_cohort_case_list(tmp_path):
    from napari_xaimed.cohort.sample import write_sample_cohort
    from napari_xaimed.concepts.radiomics import case_features
    from napari_xaimed.io import read_volume

    path = write_sample_cohort(tmp_path, 3, kind="attribution", shape=(24, 24, 24),
                               spacing=(2.0, 1.0, 1.0))
    volumes, table = case_features(path)
    assert len(volumes) == 3 and list(table.columns) == list(FEATURES)
    first = table.iloc[0]
    mask = read_volume(tmp_path / f"{table.index[0]}_mask.nii.gz").data
    assert first["volume_mm3"] == pytest.approx(2.0 * np.count_nonzero(mask))
    assert first["mean"] == pytest.approx(float(volumes[0][mask != 0].mean()), rel=1e-5)


def test_tcav_is_repeatable_and_leaves_the_callers_random_state():
    model = Brightness(rectified=True).eval()
    rng = np.random.default_rng(9)
    pool = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(8)]
    inputs = [rng.normal(size=SHAPE).astype(np.float32) for _ in range(4)]
    kwargs = dict(random_pool=pool, layers=["conv"], runs=3, target=1,
                  preprocessing=NO_SCALING, device="cpu")
    np.random.seed(123)  # noqa: NPY002 - the caller's global state must survive
    first = tcav(model, inputs, {"bright": _volumes(4, 2.0, 2)}, **kwargs)
    after = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    np.random.random()  # noqa: NPY002
    second = tcav(model, inputs, {"bright": _volumes(4, 2.0, 2)}, **kwargs)
    assert first.scores == second.scores
    np.random.seed(123)  # noqa: NPY002
    assert np.random.random() == after  # noqa: NPY002


def _case_list(folder, concept_of):
    """A case list of SHAPE volumes with masks, a concept column and an age column."""
    import csv

    from napari_xaimed.io import write_volume

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(11)
    rows = []
    for i, concept in enumerate(concept_of):
        volume = (_volumes(1, 2.0, 100 + i)[0] if concept else
                  rng.normal(size=SHAPE).astype(np.float32))
        mask = np.zeros(SHAPE, np.uint8)
        mask[3:8, 2:5 + i % 5, 4:9] = 1
        write_volume(folder / f"c{i}.nii.gz", volume, (1.0, 1.0, 1.0))
        write_volume(folder / f"c{i}_mask.nii.gz", mask, (1.0, 1.0, 1.0), is_label=True)
        rows.append({"case_id": f"c{i}", "image": f"c{i}.nii.gz", "mask": f"c{i}_mask.nii.gz",
                     "concept": concept, "age": f"{50 + 2 * i + rng.normal():.2f}"})
    with open(folder / "cases.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "cases.csv"


def test_concepts_from_a_case_list_equal_the_in_memory_ones(tmp_path):
    from napari_xaimed.concepts.from_cases import concepts_from_cases
    from napari_xaimed.io import read_volume

    path = _case_list(tmp_path, ["bright"] * 5 + [""] * 11)
    model = Brightness(rectified=True).eval()
    kwargs = dict(target=1, preprocessing=NO_SCALING, device="cpu", seed=3)
    found = concepts_from_cases(model, path, concept_column="concept",
                                measures=["mean", "volume_mm3", "age"], runs=4,
                                permutations=20, **kwargs)
    volumes = [read_volume(tmp_path / f"c{i}.nii.gz").data for i in range(16)]
    direct = tcav(model, volumes, {"bright": volumes[:5]}, random_pool=volumes[5:], runs=4,
                  **kwargs)
    assert found.tcav.scores == direct.scores
    assert found.tcav.scores[0].score == 1.0 and found.tcav.scores[0].significant
    masks = [read_volume(tmp_path / f"c{i}_mask.nii.gz").data != 0 for i in range(16)]
    np.testing.assert_allclose(found.features["mean"],
                               [v[m].mean() for v, m in zip(volumes, masks, strict=True)],
                               rtol=1e-5)
    np.testing.assert_allclose(found.features["volume_mm3"], [m.sum() for m in masks])
    rcv = regression_concepts(model, volumes, found.features, permutations=20, **kwargs)
    assert found.rcv.concepts == rcv.concepts
    table = found.to_dataframe()
    assert set(table["kind"]) == {"tcav", "rcv"}


def test_concepts_from_a_case_list_refuse_what_they_cannot_use(tmp_path):
    from napari_xaimed.concepts.from_cases import concepts_from_cases

    path = _case_list(tmp_path, ["bright"] + [""] * 7)
    model = Brightness().eval()
    kwargs = dict(preprocessing=NO_SCALING, device="cpu")
    with pytest.raises(XaimedError, match=r"no column\(s\) \['scanner'\].*age"):
        concepts_from_cases(model, path, measures=["scanner"], **kwargs)
    with pytest.raises(XaimedError, match="concept column .* or measures"):
        concepts_from_cases(model, path, **kwargs)
    with pytest.raises(XaimedError, match="at least 2"):  # a concept set of one volume
        concepts_from_cases(model, path, concept_column="concept", **kwargs)
    unnamed = _case_list(tmp_path / "unnamed", [""] * 8)
    with pytest.raises(XaimedError, match="names no concept"):
        concepts_from_cases(model, unnamed, concept_column="concept", **kwargs)
