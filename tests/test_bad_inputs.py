"""The bad-input table: every input a user can get wrong gives a :class:`XaimedError` whose
message names the problem and the fix, never a raw ValueError/IndexError/RuntimeError.

Each case is one row of the "Errors" table in docs/conventions.md. Registration cases
fail before ANTs runs, so the suite stays fast.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_xaimed import io, samples
from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import (
    attribute,
    deletion_curve,
    ensemble_attribute,
    load_model,
    truth_scores,
)
from napari_xaimed.evaluation import autc, evaluate
from napari_xaimed.registration import register
from napari_xaimed.segmentation import segment

RNG = np.random.default_rng(0)
VOLUME = RNG.random((16, 16, 16)).astype(np.float32)
WITH_NAN = np.where(VOLUME > 0.95, np.nan, VOLUME).astype(np.float32)
WITH_INF = np.where(VOLUME > 0.95, np.inf, VOLUME).astype(np.float32)
CONSTANT = np.full((16, 16, 16), 0.5, np.float32)
LABELS = np.zeros((16, 16, 16), np.int32)
LABELS[3:7, 3:7, 3:7] = 1
LABELS[9:13, 9:13, 9:13] = 2


def bundled() -> torch.nn.Module:
    return load_model("bundled").module


class OutOfMemory(torch.nn.Module):
    """A model whose every forward pass fails as a full GPU does (simulated on the CPU)."""

    def __init__(self, inner: torch.nn.Module, error: type[BaseException] = RuntimeError):
        super().__init__()
        self.inner, self.error = inner, error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.error is RuntimeError:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class TwoChannelClassifier(torch.nn.Module):
    """Takes two input channels (e.g. CT and PET): a single-channel volume does not fit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


class SequenceOutput(torch.nn.Module):
    """Outputs (batch, classes, tokens): neither class scores nor a segmentation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)[:, :, :8].repeat(1, 2, 1)


class Classifier(torch.nn.Module):
    """Class scores (batch, 3): not a segmentation network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]


def not_a_model(tmp: Path) -> str:
    path = tmp / "weights.pt"
    path.write_text("this is a README saved with the wrong name")
    return str(path)


def truncated(tmp: Path, name: str) -> str:
    full = tmp / f"full_{name}"
    io.write_volume(full, VOLUME, spacing=(1.0, 2.0, 3.0))
    data = full.read_bytes()
    cut = tmp / name
    cut.write_bytes(data[: len(data) // 2])
    return str(cut)


def not_nifti(tmp: Path) -> str:
    path = tmp / "scan.nii.gz"
    path.write_bytes(gzip.compress(b"DICM" + bytes(2000)))  # gzip, but not a NIfTI inside
    return str(path)


#: (capability, bad input, call given a temp folder, key words the message must hold)
CASES: list[tuple[str, str, Callable[[Path], object], tuple[str, ...]]] = [
    # segmentation
    ("segmentation", "2D image", lambda t: segment(VOLUME[0], method="otsu"),
     ("3D", "np.newaxis")),
    ("segmentation", "4D image", lambda t: segment(VOLUME[None], method="otsu"),
     ("3D", "data[0]")),
    ("segmentation", "NaN in image", lambda t: segment(WITH_NAN, method="otsu"),
     ("NaN", "nan_to_num")),
    ("segmentation", "inf in image", lambda t: segment(WITH_INF, method="threshold", value=0.5),
     ("infinite", "nan_to_num")),
    ("segmentation", "constant image (Otsu)", lambda t: segment(CONSTANT, method="otsu"),
     ("constant", "right layer")),
    ("segmentation", "constant image (k-means)", lambda t: segment(CONSTANT, method="kmeans"),
     ("constant", "no tissue classes")),
    ("segmentation", "spacing of two values",
     lambda t: segment(VOLUME, method="otsu", spacing=(1.0, 1.0)), ("three", "mm")),
    ("segmentation", "model file that is not a model",
     lambda t: segment(VOLUME, method="model", model=not_a_model(t)),
     ("neither TorchScript", "torch.jit.save")),
    ("segmentation", "model with 2 input channels",
     lambda t: segment(VOLUME, method="model", model=torch.nn.Conv3d(2, 2, 1), device="cpu",
                       roi_size=16), ("2 input channels", "in_channels=1")),
    ("segmentation", "classifier instead of a segmentation model",
     lambda t: segment(VOLUME, method="model", model=Classifier(), device="cpu", roi_size=16),
     ("class scores", "segmentation network")),
    ("segmentation", "GPU out of memory",
     lambda t: segment(VOLUME, method="model", model=OutOfMemory(torch.nn.Conv3d(1, 2, 1)),
                       device="cpu", roi_size=16), ("out of memory on cpu", "one volume per pass")),
    # evaluation
    ("evaluation", "shapes differ", lambda t: evaluate(LABELS, LABELS[:8]),
     ("differ in shape", "resample")),
    ("evaluation", "float labels", lambda t: evaluate(LABELS * 0.5, LABELS),
     ("integer", "threshold")),
    ("evaluation", "negative labels", lambda t: evaluate(LABELS, -LABELS),
     ("negative", ">= 0")),
    ("evaluation", "2D label maps", lambda t: evaluate(LABELS[0], LABELS[0]), ("3D",)),
    ("evaluation", "4D label maps", lambda t: evaluate(LABELS[None], LABELS[None]), ("3D",)),
    ("evaluation", "NaN in a label map",
     lambda t: evaluate(np.where(LABELS > 0, np.nan, 0.0), LABELS), ("integer", "Round")),
    ("evaluation", "bad AUTC thresholds", lambda t: autc(LABELS, LABELS, thresholds=[0.5]),
     ("at least two", "[0, 1]")),
    ("evaluation", "AUTC on shapes that differ", lambda t: autc(LABELS, LABELS[:, :8]),
     ("differ in shape", "resample")),
    # registration (all fail before ANTs runs)
    ("registration", "2D moving image",
     lambda t: register(VOLUME, VOLUME[0], transform="Rigid"), ("moving", "3D")),
    ("registration", "NaN in the moving image",
     lambda t: register(VOLUME, WITH_NAN, transform="Rigid"), ("moving", "nan_to_num")),
    ("registration", "constant moving image",
     lambda t: register(VOLUME, CONSTANT, transform="Rigid"), ("constant", "nothing to align")),
    ("registration", "zero spacing",
     lambda t: register(VOLUME, VOLUME, fixed_spacing=(0, 1, 1), transform="Rigid"),
     ("fixed_spacing", "positive")),
    ("registration", "images that do not overlap in mm",
     lambda t: register(VOLUME, VOLUME, moving_origin=(1000, 0, 0), transform="Rigid"),
     ("do not overlap", "translate")),
    ("registration", "unknown transform", lambda t: register(VOLUME, VOLUME, transform="Bspline"),
     ("unknown transform", "Affine")),
    # attribution
    ("attribution", "target class out of range",
     lambda t: attribute(bundled(), VOLUME, "saliency", target=7, device="cpu"),
     ("target class 7", "2 classes")),
    ("attribution", "model file that is not a model",
     lambda t: attribute(not_a_model(t), VOLUME, "saliency", device="cpu"),
     ("neither TorchScript", "torch.jit.save")),
    ("attribution", "model file that does not exist",
     lambda t: attribute(str(t / "missing.pt"), VOLUME, "saliency"), ("does not exist",)),
    ("attribution", "model input channels do not fit",
     lambda t: attribute(TwoChannelClassifier(), VOLUME, "saliency", device="cpu"),
     ("does not accept", "channels")),
    ("attribution", "model output shape does not fit",
     lambda t: attribute(SequenceOutput(), VOLUME, "saliency", device="cpu"),
     ("neither class scores", "(batch, channels, z, y, x)")),
    ("attribution", "attention method on a model without attention (CNN)",
     lambda t: attribute(bundled(), VOLUME, "attention_rollout", device="cpu"),
     ("no self-attention blocks", "gradcam")),
    ("attribution", "GPU out of memory (RuntimeError)",
     lambda t: attribute(OutOfMemory(bundled()), VOLUME, "saliency", device="cpu"),
     ("out of memory on cpu", "one volume per pass")),
    ("attribution", "GPU out of memory (OutOfMemoryError)",
     lambda t: attribute(OutOfMemory(bundled(), torch.cuda.OutOfMemoryError), VOLUME,
                         "occlusion", target=1, window=8, stride=8, device="cpu"),
     ("out of memory on cpu", "one volume per pass")),
    ("attribution", "NaN in image",
     lambda t: attribute(bundled(), WITH_NAN, "saliency", device="cpu"), ("NaN", "nan_to_num")),
    ("attribution", "4D image", lambda t: attribute(bundled(), VOLUME[None], "saliency"),
     ("3D", "data[0]")),
    ("attribution", "region of another shape",
     lambda t: attribute("bundled-segmenter", VOLUME, "saliency", region=LABELS[:8],
                         device="cpu"), ("region", "volume's shape")),
    ("attribution", "empty region",
     lambda t: attribute("bundled-segmenter", VOLUME, "saliency",
                         region=np.zeros_like(LABELS), device="cpu"), ("empty", "non-empty")),
    ("attribution", "ensemble of one model",
     lambda t: ensemble_attribute([bundled()], VOLUME, "saliency", device="cpu"),
     ("at least two", "dropout_passes")),
    ("attribution", "deletion curve, GPU out of memory",
     lambda t: deletion_curve(OutOfMemory(bundled()), VOLUME, VOLUME, device="cpu"),
     ("out of memory on cpu", "one volume per pass")),
    ("attribution", "deletion curve, heatmap of another shape",
     lambda t: deletion_curve(bundled(), VOLUME, VOLUME[:8], device="cpu"),
     ("heatmap", "volume's shape")),
    ("attribution", "truth metrics, empty mask",
     lambda t: truth_scores(VOLUME, np.zeros_like(LABELS)), ("mask is empty",)),
    ("attribution", "truth metrics, NaN in heatmap", lambda t: truth_scores(WITH_NAN, LABELS),
     ("NaN", "nan_to_num")),
    ("attribution", "truth metrics, shapes differ", lambda t: truth_scores(VOLUME, LABELS[:8]),
     ("differ in shape", "resample")),
    # io
    ("io", "truncated .nii.gz", lambda t: io.read_volume(truncated(t, "cut.nii.gz")),
     ("truncated", "re-export")),
    ("io", "truncated .nii", lambda t: io.read_volume(truncated(t, "cut.nii")),
     ("truncated", "re-export")),
    ("io", "not a NIfTI inside", lambda t: io.read_volume(not_nifti(t)),
     ("not a NIfTI", "re-export")),
    ("io", "no such file", lambda t: io.read_volume(t / "missing.nii.gz"), ("check the path",)),
    ("io", "writing label ids above 2**32",
     lambda t: io.write_volume(t / "big.nii.gz", LABELS.astype(np.int64) * 2**40),
     ("32 bits", "relabel")),
    ("io", "writing a 2D array", lambda t: io.write_volume(t / "flat.nii.gz", VOLUME[0]),
     ("3D", "np.newaxis")),
    ("io", "writing without a NIfTI suffix", lambda t: io.write_volume(t / "out.png", VOLUME),
     (".nii", ".nii.gz")),
    ("io", "metadata that JSON cannot hold",
     lambda t: io.write_volume(t / "out.nii.gz", VOLUME, metadata={"model": torch.nn.ReLU()}),
     ("JSON", "str()")),
    # sample data
    ("samples", "more lesions than the volume holds",
     lambda t: samples.longitudinal_pair(shape=(28, 32, 30), spacing=(1.5, 1.0, 1.1), seed=3),
     ("Could not place", "fewer or a larger")),
    ("samples", "a new lesion that does not fit",
     lambda t: samples.longitudinal_pair(shape=(32, 36, 34), spacing=(1.5, 1.0, 0.9), seed=3,
                                         n_lesions=1, new_lesion_radius_mm=5.0),
     ("new lesion", "smaller", "larger volume")),
]


@pytest.mark.parametrize(("capability", "case", "call", "words"), CASES,
                         ids=[f"{c}: {case}" for c, case, _, _ in CASES])
def test_bad_input_gives_a_clear_error_naming_the_fix(tmp_path, capability, case, call, words):
    with pytest.raises(XaimedError) as caught:
        call(tmp_path)
    message = str(caught.value)
    for word in words:
        assert word in message, (case, message)
    # one readable message, not a traceback
    assert "Traceback" not in message and len(message.splitlines()) <= 2


def test_the_table_covers_every_capability_with_enough_cases():
    assert {c for c, *_ in CASES} == {"segmentation", "evaluation", "registration",
                                      "attribution", "io", "samples"}
    assert len(CASES) >= 25


def test_metadata_that_cannot_be_saved_leaves_no_file(tmp_path):
    with pytest.raises(XaimedError):
        io.write_volume(tmp_path / "out.nii.gz", VOLUME, metadata={"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_inputs_are_left_as_they_were_after_an_error():
    volume, labels = WITH_NAN.copy(), -LABELS
    before = labels.copy()
    with pytest.raises(XaimedError):
        segment(volume, method="otsu")
    with pytest.raises(XaimedError):
        evaluate(LABELS, labels)
    np.testing.assert_array_equal(volume, WITH_NAN)  # NaN in the same places, not replaced
    np.testing.assert_array_equal(labels, before)


# Inputs that look wrong but have a defined answer: no error, the documented result.

def test_empty_prediction_scores_zero_with_every_reference_missed():
    # two label values, each its own class (they were merged into one class silently before)
    result = evaluate(LABELS, np.zeros_like(LABELS))
    assert list(result.classes) == ["1", "2"]
    for c in result.classes.values():
        assert (c.tp, c.fp, c.fn) == (0, 0, 1)
        assert c.pq == c.sq == c.rq == 0.0
    mean = result.mean_over_classes()
    assert (mean["tp"], mean["fp"], mean["fn"]) == (0, 0, 2)
    assert mean["pq"] == mean["sq"] == mean["rq"] == 0.0


def test_empty_reference_and_prediction_give_nan_not_a_perfect_score():
    result = evaluate(np.zeros_like(LABELS), np.zeros_like(LABELS))["all"]
    assert (result.tp, result.fp, result.fn) == (0, 0, 0)
    assert np.isnan(result.pq) and np.isnan(result.sq) and np.isnan(result.rq)


def test_a_constant_heatmap_scores_chance_and_points_nowhere():
    scores = truth_scores(np.zeros(LABELS.shape), LABELS)  # e.g. Grad-CAM that found nothing
    chance = float(np.mean(LABELS > 0))
    assert scores["relevance_rank_accuracy"] == pytest.approx(chance)
    assert scores["auroc"] == pytest.approx(0.5)
    assert np.isnan(scores["relevance_mass_accuracy"])  # no positive relevance to share out
    assert scores["pointing_game"] == 0.0


def test_huge_label_ids_are_matched_and_reported_as_they_are():
    huge = LABELS.astype(np.int64) * 2**40  # ids 2**40 and 2**41
    shifted = np.roll(huge, 1, axis=0)
    result = evaluate(huge, shifted, instance_input=True)["all"]
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    ids = sorted(row.reference_ids[0] for row in result.rows)
    assert ids == [2**40, 2**41]


def test_a_lazy_volume_too_big_for_memory_is_refused_before_it_is_read(monkeypatch):
    """A whole read of a dask input above half the memory available is refused, naming the
    lazy functions, before a voxel is read (``as_volume``, which every in-memory path calls);
    the public functions take such an input slab by slab instead (issue 28: they choose the
    path), so none of them reads it whole; numpy arrays are unaffected."""
    import dask.array as da

    from napari_xaimed._core import validate as _validate

    reads = []
    source = np.zeros((32, 32, 32), np.float32)
    source[8:16, 8:16, 8:16] = 1

    def counted(block):
        reads.append(block.size)
        return block

    volume = da.from_array(source, chunks=(8, 32, 32)).map_blocks(
        counted, dtype=np.float32, meta=np.zeros((0, 0, 0), np.float32))
    monkeypatch.setattr(_validate, "_available_memory", lambda: 2 * source.nbytes - 2)
    with pytest.raises(XaimedError, match=r"read lazily .*segment_lazy, evaluate_lazy, "
                                          r"attribute_lazy, register_lazy"):
        _validate.as_volume(volume, "the image")
    assert reads == []
    labels = segment(volume, "otsu")  # slab by slab: never more than one chunk at a time
    assert int(labels.max().compute()) == 1
    assert reads and max(reads) <= 8 * 32 * 32
    assert segment(source, "otsu").max() == 1  # numpy: never refused
    monkeypatch.setattr(_validate, "_available_memory", lambda: 2 * source.nbytes)
    assert _validate.as_volume(volume, "the image").shape == source.shape  # fits: read
