"""Deletion and insertion curves on a model whose score is known in closed form."""

import numpy as np
import pytest
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import attribute, deletion_curve, insertion_curve
from napari_xaimed.explanations import faithfulness


class BoxSum(torch.nn.Module):
    """Class 1's logit is the sum of the input inside a box of 8 voxels; class 0's is 0."""

    def __init__(self, shape=(4, 4, 4)):
        super().__init__()
        weight = torch.zeros(shape)
        weight[1:3, 1:3, 1:3] = 1
        self.register_buffer("weight", weight)

    def forward(self, x):
        one = (x[:, 0] * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(one), one], dim=1)


def test_hand_computed_areas():
    model = BoxSum()
    volume = np.ones((4, 4, 4), np.float32)
    box = model.weight.numpy()
    kwargs = dict(target=1, baseline="zero", steps=8, score="logit")  # 8 voxels per step
    good = deletion_curve(model, volume, box, **kwargs)
    np.testing.assert_allclose(good.fractions, np.arange(9) / 8)
    np.testing.assert_allclose(good.scores, [8, 0, 0, 0, 0, 0, 0, 0, 0])
    assert good.area == pytest.approx(0.5)  # one triangle of height 8 over 1/8
    bad = deletion_curve(model, volume, 1 - box, **kwargs)  # the box goes last
    np.testing.assert_allclose(bad.scores, [8] * 8 + [0])
    assert bad.area == pytest.approx(7.5)
    inserted = insertion_curve(model, volume, box, **kwargs)
    np.testing.assert_allclose(inserted.scores, [0] + [8] * 8)
    assert inserted.area == pytest.approx(7.5)


class WithHidden(BoxSum):
    """BoxSum returning ``(logits, hidden states)`` as MONAI's ViT does."""

    def forward(self, x):
        return super().forward(x), [x]


def test_a_model_returning_logits_and_hidden_states_gives_the_logits_curve():
    volume = np.ones((4, 4, 4), np.float32)
    box = BoxSum().weight.numpy()
    kwargs = dict(target=1, baseline="zero", steps=8, score="logit")
    for curve in (deletion_curve, insertion_curve):
        np.testing.assert_allclose(curve(WithHidden(), volume, box, **kwargs).scores,
                                   curve(BoxSum(), volume, box, **kwargs).scores)


def test_probability_score_and_the_predicted_class_by_default():
    model = BoxSum()
    volume = np.ones((4, 4, 4), np.float32)
    curve = deletion_curve(model, volume, model.weight.numpy(), baseline="zero", steps=8)
    assert curve.target == 1  # logit 8 against 0
    assert curve.scores[0] == pytest.approx(1 / (1 + np.exp(-8)))
    assert curve.scores[-1] == pytest.approx(0.5)


def test_supervoxels_go_whole(monkeypatch):
    labels = np.repeat(np.arange(4), 16).reshape(4, 4, 4)  # four slabs of 16 voxels
    monkeypatch.setattr(faithfulness, "slic_supervoxels", lambda volume, n: labels)
    heat = np.zeros((4, 4, 4))
    heat[labels == 2] = 3.0
    heat[labels == 0] = 2.0
    heat[0, 0, 0] = -50  # slab 0's mean drops to -1.25: it goes last, still whole
    rank, counts = faithfulness.removal_order(heat, np.zeros((4, 4, 4)), 4, 4)
    np.testing.assert_array_equal(counts, [0, 16, 32, 48, 64])
    assert rank[labels == 2].max() < 16  # mean 3: first
    assert rank[labels == 1].min() == 16 and rank[labels == 3].min() == 32  # mean 0: in order
    assert rank[labels == 0].min() == 48


def test_baselines():
    volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    assert faithfulness.baseline_volume(volume, "mean")[0, 0, 0] == pytest.approx(13)
    assert faithfulness.baseline_volume(volume, "min").max() == 0
    assert faithfulness.baseline_volume(volume, 7.5).min() == 7.5
    blurred = faithfulness.baseline_volume(volume, "blur", spacing=(1, 1, 1), blur_mm=1.0)
    assert blurred.std() < volume.std()
    with pytest.raises(XaimedError, match="baseline"):
        faithfulness.baseline_volume(volume, "noise")


def test_bundled_model_deletes_faster_along_its_saliency_than_at_random():
    from napari_xaimed.samples import lesion_volume

    sample = lesion_volume(seed=3, n_lesions=2)
    saliency = attribute("bundled", sample.image, "saliency", target=1).map
    random_map = np.random.default_rng(0).random(sample.image.shape)
    kwargs = dict(target=1, baseline="blur", steps=10, spacing=sample.spacing)
    explained = deletion_curve("bundled", sample.image, saliency, **kwargs)
    chance = deletion_curve("bundled", sample.image, random_map, **kwargs)
    assert explained.scores[0] > 0.5  # the lesion is seen
    assert explained.area < chance.area - 0.1


def test_clear_errors(tiny):
    volume = np.ones((4, 4, 4), np.float32)
    with pytest.raises(XaimedError, match="volume's shape"):
        deletion_curve(BoxSum(), volume, np.ones((4, 4, 5)))
    with pytest.raises(XaimedError, match="classifier"):
        deletion_curve(torch.nn.Conv3d(1, 2, 1), volume, volume)
    with pytest.raises(XaimedError, match="does not exist"):
        deletion_curve(BoxSum(), volume, volume, target=5)
