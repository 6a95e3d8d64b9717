"""Ensembles of explanations: mean, spread, reliable relevance and how much members agree."""

import numpy as np
import pytest
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import (
    attribute,
    ensemble_attribute,
    map_consistency,
    reliable_relevance,
)


def test_consistency_of_identical_reversed_and_disjoint_maps():
    a = np.arange(1000, dtype=float).reshape(10, 10, 10)
    same = map_consistency([a, a.copy()], top_fraction=0.1)
    assert same.mean_spearman == pytest.approx(1.0)
    assert same.mean_top_overlap == pytest.approx(1.0)
    reversed_ = map_consistency([a, -a], top_fraction=0.1, absolute=False)
    assert reversed_.mean_spearman == pytest.approx(-1.0)
    assert reversed_.mean_top_overlap == 0.0  # top 100 of one are the bottom 100 of the other
    # three maps: the matrix is symmetric with ones on the diagonal
    b = np.random.default_rng(0).normal(size=a.shape)
    three = map_consistency([a, b, a + 0.01 * b], top_fraction=0.05)
    np.testing.assert_allclose(three.spearman, three.spearman.T)
    np.testing.assert_allclose(np.diag(three.spearman), 1)
    assert three.spearman[0, 2] > 0.99 and abs(three.spearman[0, 1]) < 0.1


def test_reliable_relevance_keeps_the_mean_where_the_spread_is_small():
    mean = np.array([1.0, -2.0, 0.5, 0.0])
    std = np.array([0.5, 2.5, 0.5, 0.0])
    np.testing.assert_array_equal(reliable_relevance(mean, std, 1.0), [1.0, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(reliable_relevance(mean, std, 0.5), [1.0, 0.0, 0.0, 0.0])


def test_ensemble_of_two_models_is_the_mean_and_spread_of_their_maps(tiny_net, volume):
    torch.manual_seed(1)
    first = tiny_net().eval()
    torch.manual_seed(2)
    second = tiny_net().eval()
    result = ensemble_attribute([first, second], volume, "saliency", target=2)
    one = attribute(first, volume, "saliency", target=2).map
    two = attribute(second, volume, "saliency", target=2).map
    np.testing.assert_allclose(result.mean, (one + two) / 2, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.std, np.abs(one - two) / 2, rtol=1e-4, atol=1e-8)
    assert result.mean.shape == volume.shape and result.target == 2
    assert -1 <= result.consistency.mean_spearman < 1


def test_members_explain_the_first_members_class(tiny_net, volume):
    torch.manual_seed(3)
    models = [tiny_net().eval() for _ in range(3)]
    result = ensemble_attribute(models, volume, "saliency")
    assert {a.target for a in result.members} == {result.members[0].target}


class DropNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 8, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.conv(x))).mean(dim=(2, 3, 4)))


def test_kept_on_dropout_varies_the_map_and_is_reproducible(volume):
    torch.manual_seed(0)
    model = DropNet().eval()
    result = ensemble_attribute(model, volume, "saliency", dropout_passes=4, target=1)
    assert len(result.members) == 4
    assert float(result.std.max()) > 0  # the masks differ between passes
    again = ensemble_attribute(model, volume, "saliency", dropout_passes=4, target=1)
    np.testing.assert_array_equal(result.mean, again.mean)  # seeded per member
    assert not model.drop.training  # the user's model is left in evaluation mode


def test_clear_errors(tiny, volume):
    with pytest.raises(XaimedError, match="at least two models"):
        ensemble_attribute([tiny], volume, "saliency")
    with pytest.raises(XaimedError, match="no dropout layers"):
        ensemble_attribute(tiny, volume, "saliency", dropout_passes=3)
    with pytest.raises(XaimedError, match="differ in shape"):
        map_consistency([np.zeros((2, 2, 2)), np.zeros((2, 2, 3))])
