"""The latent space of a cohort: embeddings, projection, similar cases and confounder scores,
on a model whose layer and decision are known by construction."""

import numpy as np
import pandas as pd
import pytest
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.latent.embedding import (
    assemble,
    case_embedding,
    confounder_scores,
    embed,
    project,
    similar_cases,
)

SHAPE = (8, 8, 8)
NO_SCALING = {"scaling": "none"}


class Features(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x, x * x], dim=1)


class Bright(torch.nn.Module):
    """A two-channel map (intensity, squared intensity); class 1 scores the summed intensity,
    class 0 its negative: the decision direction is the first channel."""

    def __init__(self):
        super().__init__()
        self.features = Features()

    def forward(self, x):
        total = self.features(x)[:, 0].flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([-total, total], dim=1)


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(0)
    levels = np.linspace(-1, 1, 12)
    rng.shuffle(levels)
    volumes = [(lv + 0.3 * rng.normal(size=SHAPE)).astype(np.float32) for lv in levels]
    ids = [f"case{i:02d}" for i in range(len(volumes))]
    return volumes, ids, levels


def test_embeddings_are_the_layers_channel_means_and_the_decision_is_known(cohort):
    volumes, ids, _ = cohort
    emb = embed(Bright().eval(), volumes, ids=ids, target=1, preprocessing=NO_SCALING,
                device="cpu")
    assert emb.layer == "features" and emb.target == 1 and emb.ids == ids
    expected = np.array([[v.mean(), (v * v).mean()] for v in volumes])
    np.testing.assert_allclose(emb.vectors, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.decision, [1.0, 0.0], atol=1e-6)
    assert set(emb.predicted) <= {0, 1}


def test_projection_and_similar_cases_follow_the_brightness(cohort):
    volumes, ids, levels = cohort
    emb = embed(Bright().eval(), volumes, ids=ids, target=1, preprocessing=NO_SCALING,
                device="cpu")
    xy = project(emb, "pca")
    assert xy.shape == (12, 2)
    # two channels, two components: the projection keeps all of the standardised spread
    z = (emb.vectors - emb.vectors.mean(0)) / emb.vectors.std(0)
    np.testing.assert_allclose((xy ** 2).sum(), (z ** 2).sum(), rtol=1e-6)
    brightest = int(np.argmax(levels))
    near = similar_cases(emb, ids[brightest], k=2, metric="euclidean")
    assert ids[brightest] not in set(near["case_id"])
    by_hand = np.linalg.norm(z - z[brightest], axis=1)
    by_hand[brightest] = np.inf
    assert list(near["index"]) == list(np.argsort(by_hand)[:2])
    np.testing.assert_allclose(near["distance"], np.sort(by_hand)[:2], rtol=1e-6)
    vector = similar_cases(emb, emb.vectors[brightest], k=1, metric="euclidean")
    assert vector["case_id"][0] == ids[brightest]  # a vector query keeps every case


def test_the_decision_variable_is_a_confounder_and_noise_is_not(cohort):
    volumes, ids, levels = cohort
    emb = embed(Bright().eval(), volumes, ids=ids, target=1, preprocessing=NO_SCALING,
                device="cpu")
    rng = np.random.default_rng(3)
    metadata = pd.DataFrame({"brightness": [float(v.mean()) for v in volumes],
                             "age": rng.normal(60, 10, size=12),
                             "scanner": rng.choice(["A", "B"], size=12)},
                            index=ids).iloc[::-1]  # by id, in another order
    scores = confounder_scores(emb, metadata, ["brightness", "age", "scanner"],
                               ridge=1e-3).set_index("variable")
    assert scores.index[0] == "brightness"
    assert scores.loc["brightness", "r2"] > 0.95
    assert scores.loc["brightness", "alignment"] > 0.9
    assert scores.loc["brightness", "con_score"] > 0.85
    assert scores.loc["age", "con_score"] < 0.3 and scores.loc["scanner=B", "con_score"] < 0.3


def test_latent_space_bad_input(cohort):
    volumes, ids, _ = cohort
    model = Bright().eval()
    emb = embed(model, volumes[:6], ids=ids[:6], target=1, preprocessing=NO_SCALING,
                device="cpu")
    with pytest.raises(XaimedError, match="no column"):
        confounder_scores(emb, pd.DataFrame({"age": range(6)}), ["sex"])
    with pytest.raises(XaimedError, match="rows for 6 cases"):
        confounder_scores(emb, pd.DataFrame({"age": range(4)}), ["age"])
    with pytest.raises(XaimedError, match="no case"):
        similar_cases(emb, "nobody")
    with pytest.raises(XaimedError, match="unknown projection"):
        project(emb, "tsne")
    with pytest.raises(XaimedError, match="at least 2 volumes"):
        embed(model, volumes[:1])


def test_one_case_at_a_time_gives_the_same_latent_space(cohort):
    """What the cohort's workers compute per case, put together, is embed() of all at once,
    with and without a named target."""
    volumes, ids, _ = cohort
    model = Bright().eval()
    for target in (1, None):
        whole = embed(model, volumes, ids=ids, target=target, preprocessing=NO_SCALING,
                      device="cpu")
        cases = [case_embedding(model, v, target=target, preprocessing=NO_SCALING,
                                device="cpu") for v in volumes]
        parts = assemble(ids, cases, target=target)
        assert (parts.layer, parts.target, parts.ids) == (whole.layer, whole.target, whole.ids)
        np.testing.assert_allclose(parts.vectors, whole.vectors, rtol=1e-6)
        np.testing.assert_allclose(parts.decision, whole.decision, atol=1e-6)
        np.testing.assert_array_equal(parts.predicted, whole.predicted)
    assert set(cases[0].gradients) == {0, 1}  # without a target every class is kept
    np.testing.assert_allclose(cases[0].gradients[0], -cases[0].gradients[1], atol=1e-6)
    only = case_embedding(model, volumes[0], target=1, preprocessing=NO_SCALING, device="cpu")
    with pytest.raises(XaimedError, match="no gradient for class 0"):
        assemble(ids[:2], [only, only], target=0)
    with pytest.raises(XaimedError, match="2 ids for 1 embeddings"):
        assemble(ids[:2], [only])
    with pytest.raises(XaimedError, match="does not exist"):
        case_embedding(model, volumes[0], target=5, preprocessing=NO_SCALING, device="cpu")


def test_a_lazy_volume_is_embedded_as_the_same_volume_in_memory():
    """A dask volume (a Zarr larger than memory) through the bundled classifier's 32^3 resize,
    read slab by slab: the same embedding, gradients and scores as the array in memory; a model
    that takes volumes at their own size is refused with what to do."""
    import dask.array as da

    from napari_xaimed.samples import lesion_volume

    image = lesion_volume(shape=(40, 48, 48), seed=2).image
    lazy = da.from_array(image, chunks=(7, 48, 48))
    eager, found = case_embedding("bundled", image), case_embedding("bundled", lazy)
    assert found.layer == eager.layer
    np.testing.assert_allclose(found.vector, eager.vector, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found.scores, eager.scores, rtol=1e-5)
    for c in eager.gradients:
        np.testing.assert_allclose(found.gradients[c], eager.gradients[c], rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(XaimedError, match="read lazily"):
        case_embedding(Bright().eval(), da.from_array(np.zeros(SHAPE, np.float32)),
                       preprocessing=NO_SCALING)
