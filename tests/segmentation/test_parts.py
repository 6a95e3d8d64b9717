"""Things with parts in the evaluation's layout, from classes or from a core threshold."""

import numpy as np
import pytest

from napari_xaimed import XaimedError, samples
from napari_xaimed.evaluation import evaluate
from napari_xaimed.segmentation import core_parts, parts_from_classes


def test_parts_from_classes_rebuild_the_panoptic_layout():
    pan = samples.panoptic_pair(seed=0)
    # the sample's semantic map under other class values, with an unrelated class 9 mixed in
    classes = np.select([pan.reference_semantic == 1, pan.reference_semantic == 2],
                        [5, 7], default=0).astype(np.uint8)
    classes[:2] = 9
    labels, spec = parts_from_classes(classes, thing=[5, 7], parts={"core": [7]}, name="lesion")
    expected = pan.reference_semantic.copy()
    expected[:2] = 0
    np.testing.assert_array_equal(labels, expected)
    assert spec == pan.parts
    result = evaluate(labels, labels, parts=spec)  # the layout the evaluation takes
    assert result["lesion"].pq == pytest.approx(1.0)


def test_several_parts_and_bad_specs():
    classes = np.array([0, 1, 2, 3, 4]).reshape(1, 1, 5)
    labels, spec = parts_from_classes(classes, thing=[2, 3, 4],
                                      parts={"core": [4], "rim": [2]}, name="tumour")
    assert labels.ravel().tolist() == [0, 0, 3, 1, 2]
    assert spec == {"tumour": {"thing": [1, 2, 3], "parts": {"core": [2], "rim": [3]}}}
    with pytest.raises(XaimedError, match="not among the thing"):
        parts_from_classes(classes, thing=[2], parts={"core": [3]})
    with pytest.raises(XaimedError, match="more than one part"):
        parts_from_classes(classes, thing=[2, 3], parts={"a": [3], "b": [3]})


def test_core_above_a_percentile_of_each_instance():
    rng = np.random.default_rng(0)
    instances = np.zeros((6, 10, 10), np.uint16)
    instances[1:5, 1:5, 1:5] = 1
    instances[1:5, 5:9, 5:9] = 4
    volume = rng.random(instances.shape).astype(np.float32)
    volume[instances == 4] += 10  # a much brighter lesion: a global threshold would miss 1
    labels, spec = core_parts(instances, volume, percentile=75)
    for lesion in (1, 4):
        inside = instances == lesion
        cut = np.percentile(volume[inside], 75)
        np.testing.assert_array_equal(labels[inside] == 2, volume[inside] > cut)
        assert (labels[inside] == 2).sum() == inside.sum() // 4
    assert not labels[instances == 0].any() and (labels[instances > 0] >= 1).all()
    assert spec == {"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}
    by_value, _ = core_parts(instances, volume, value=10.5)
    np.testing.assert_array_equal(by_value == 2, (instances > 0) & (volume > 10.5))
    with pytest.raises(XaimedError, match="exactly one"):
        core_parts(instances, volume)
    with pytest.raises(XaimedError, match="same shape"):
        core_parts(instances[:-1], volume)
