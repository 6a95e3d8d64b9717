"""ANTs tissue classes (kmeans, atropos) on a seeded three-class phantom."""

import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed._core.progress import run_steps
from napari_xaimed.segmentation import segment, segment_steps

SPACING = (2.0, 1.0, 1.0)


def phantom(seed=0):
    """An ellipsoidal body of three tissues (2, 3, 4 plus noise of 0.3) on a zero background;
    truth 1..3 in the order of intensity."""
    rng = np.random.default_rng(seed)
    shape = (32, 40, 40)
    z, y, x = np.indices(shape)
    body = ((z - 16) / 14) ** 2 + ((y - 20) / 18) ** 2 + ((x - 20) / 18) ** 2 < 1
    truth = np.zeros(shape, np.uint8)
    truth[body] = 1
    truth[body & (x > 16)] = 2
    truth[body & (x > 26)] = 3
    means = np.array([0.0, 2.0, 3.0, 4.0])
    image = means[truth] + rng.normal(0, 0.3, shape) * body
    return image.astype(np.float32), truth, body


@pytest.mark.parametrize("method", ["kmeans", "atropos"])
def test_three_classes_found_in_order_of_intensity(method):
    image, truth, body = phantom()
    result = run_steps(segment_steps(image, method, spacing=SPACING, n_classes=3))
    labels = result.labels
    accuracy = float((labels[body] == truth[body]).mean())
    assert accuracy > 0.9, accuracy
    assert not labels[~body].any()  # the default mask leaves the background out
    means = [float(image[labels == k].mean()) for k in (1, 2, 3)]
    assert means == sorted(means) and result.facts["class_means"] == pytest.approx(means)
    assert result.kind == "classes"
    probs = result.probabilities
    assert probs.shape == (3, *image.shape) and probs.dtype == np.float32
    inside = labels > 0
    np.testing.assert_allclose(probs[:, inside].sum(0), 1.0, atol=1e-3)
    # label k is the most probable class k - 1 almost everywhere (MRF ties aside)
    assert ((probs[:, inside].argmax(0) + 1) == labels[inside]).mean() > 0.98
    assert result.facts["ants_spacing"] == pytest.approx(SPACING)  # ANTs saw the mm grid


def test_reproducible_and_masked():
    image, truth, body = phantom(seed=1)
    mask = body.copy()
    mask[:, :, :20] = False  # classify only the right half
    first = run_steps(segment_steps(image, "atropos", spacing=SPACING, n_classes=2, mask=mask,
                                    mrf=0.1, iterations=3))
    second = run_steps(segment_steps(image, "atropos", spacing=SPACING, n_classes=2,
                                     mask=mask, mrf=0.1, iterations=3))
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert not first.labels[~mask].any() and first.labels[mask].all()
    # in the right half, tissues 2 and 3 (truth 2 is x 17-26, 3 beyond) are the two classes
    right = mask & (truth >= 2)
    assert ((first.labels[right] + 1) == truth[right]).mean() > 0.9
    assert first.params["mask"] == "given" and first.facts["mask_voxels"] == int(mask.sum())


@pytest.mark.parametrize("method", ["kmeans", "atropos"])
def test_bad_input_says_what_to_fix(method):
    image, _, body = phantom()
    with pytest.raises(XaimedError, match="n_classes"):
        segment(image, method, n_classes=1)
    with pytest.raises(XaimedError, match="shape"):
        segment(image, method, mask=body[:-1])
    with pytest.raises(XaimedError, match="mask is empty"):
        segment(image, method, mask=np.zeros_like(body))
    with pytest.raises(XaimedError, match="3D"):
        segment(image[0], method)
    with pytest.raises(XaimedError, match="pick one channel"):
        segment(image[None], method)
    nan = image.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        segment(nan, method)
    with pytest.raises(XaimedError, match="does not take mrf_weight"):
        segment(image, method, mrf_weight=0.3)
    with pytest.raises(XaimedError, match="constant"):
        segment(np.ones((8, 8, 8), np.float32), method)
    with pytest.raises(XaimedError, match="mrf"):
        segment(image, method, mrf=-1)


def test_flat_classes_fail_with_a_hint():
    volume = np.zeros((16, 16, 16), np.float32)
    volume[4:12, 4:12, 4:12] = 1
    volume[4:12, 4:12, 8:12] = 2  # two flat levels cannot make three Gaussian classes
    with pytest.raises(XaimedError, match="use fewer classes"):
        segment(volume, "atropos", n_classes=3)


def test_classes_are_renumbered_by_mean_intensity():
    from napari_xaimed.segmentation.tissue import order_by_intensity

    volume = np.array([5.0, 1.0, 3.0, 0.0]).reshape(1, 1, 4)
    labels = np.array([1, 2, 3, 0], np.uint8).reshape(1, 1, 4)
    probs = np.stack([labels == k for k in (1, 2, 3)]).astype(np.float32)
    ordered, ordered_probs, means = order_by_intensity(volume, labels, probs)
    assert ordered.ravel().tolist() == [3, 1, 2, 0] and means == [1.0, 3.0, 5.0]
    np.testing.assert_array_equal(ordered_probs.argmax(0)[ordered > 0] + 1, ordered[ordered > 0])


def test_cancel_kills_the_ants_process_and_removes_its_folder():
    import glob
    import tempfile

    from napari_xaimed._core import spawned

    image, _, _ = phantom()
    before = set(glob.glob(f"{tempfile.gettempdir()}/xaimed-atropos-*"))
    steps = segment_steps(image, "atropos", spacing=SPACING, n_classes=3, iterations=100)
    step = next(steps)
    while not spawned._RUNNING:  # until the child runs: then cancel
        step = next(steps)
    running = list(spawned._RUNNING)
    assert running and step.total > 0
    steps.close()
    assert all(process.poll() is not None for process in running)
    assert not spawned._RUNNING
    assert set(glob.glob(f"{tempfile.gettempdir()}/xaimed-atropos-*")) == before
