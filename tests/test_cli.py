"""The demo command, headless: the same work as the viewer, written to NIfTI + JSON."""

import json

import numpy as np

from napari_xaimed.cli.main import main
from napari_xaimed.io import read_volume


def test_headless_demo_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--headless", str(tmp_path / "out"), "--seed", "1"]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lesions_found"] == summary["lesions_true"]
    assert summary["lesion_dice"] > 0.85
    seg = read_volume(out / "otsu_segmentation_lesion_ct.nii.gz")  # the widget's name
    truth = read_volume(out / "lesion_truth.nii.gz")
    assert seg.is_label and truth.is_label
    assert seg.metadata["kind"] == "segmentation" and seg.metadata["params"]["method"] == "otsu"
    assert seg.data.shape == truth.data.shape == (64, 64, 64)
    current = read_volume(out / "current.nii.gz")
    assert current.spacing == (1.5, 1.0, 1.0) and not current.is_label
    for name in ("prior", "current_organs", "prior_organs", "reference", "prediction",
                 "reference_parts", "prediction_parts"):
        assert (out / f"{name}.nii.gz").is_file() and (out / f"{name}.json").is_file()
    assert np.array_equal(read_volume(out / "reference.nii.gz").data > 0,
                          read_volume(out / "reference_parts.nii.gz").data > 0)
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.samples import panoptic_pair

    pair = panoptic_pair(seed=1)
    direct = evaluate(pair.reference, pair.prediction, instance_input=True, matching="many_to_one",
                      threshold=0.3, metrics=())["all"]
    assert summary["panoptic"]["tp"] == direct.tp and summary["panoptic"]["fn"] == direct.fn
    errors = read_volume(out / "errors_prediction.nii.gz")
    assert errors.is_label and set(np.unique(errors.data)) <= {0, 1, 2, 3, 4}
    assert errors.metadata["params"] == {"matching": "many_to_one", "threshold": 0.3,
                                         "instance_input": True}
    assert "Dice" in capsys.readouterr().out
    # the bundled classifier's decision, explained
    assert summary["lesion_classifier"]["predicted"] == summary["lesion_classifier"]["truth"]
    cam = read_volume(out / "grad_cam_lesion_ct.nii.gz")
    assert cam.data.shape == (64, 64, 64) and cam.metadata["params"]["method"] == "gradcam"
    assert len(cam.metadata["model"]["sha256"]) == 64
    assert (out / "integrated_gradients_lesion_ct.nii.gz").is_file()


def test_unknown_command_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_register_command_writes_field_jacobian_and_quality(tmp_path, capsys):
    from napari_xaimed.io import write_volume
    from napari_xaimed.samples import longitudinal_pair

    pair = longitudinal_pair(seed=2)
    for name, data in (("fixed", pair.fixed), ("moving", pair.moving),
                       ("fixed_labels", pair.fixed_labels), ("moving_labels", pair.moving_labels)):
        write_volume(tmp_path / f"{name}.nii.gz", data, spacing=pair.spacing,
                     is_label="labels" in name)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "fixed.nii.gz"), str(tmp_path / "moving.nii.gz"),
                 "--out", str(out), "--transform", "SyNOnly", "--iterations", "20,10",
                 "--fixed-labels", str(tmp_path / "fixed_labels.nii.gz"),
                 "--moving-labels", str(tmp_path / "moving_labels.nii.gz")]) == 0
    warped = read_volume(out / "warped.nii.gz")
    assert warped.data.shape == pair.fixed.shape and warped.spacing == pair.spacing
    field = read_volume(out / "displacement.nii.gz")
    assert field.data.shape == (3, *pair.fixed.shape)  # components first, as NIfTI axis 4
    jacobian = read_volume(out / "jacobian.nii.gz")
    assert jacobian.data.shape == pair.fixed.shape and jacobian.data.min() > 0
    quality = json.loads((out / "quality.json").read_text())
    metrics = quality["result"]["metrics"]
    assert metrics["ncc_after"] > metrics["ncc_before"]
    assert set(metrics["dice_after"]) == {"1", "2", "3"}
    assert "NCC" in capsys.readouterr().out


def test_register_command_reports_bad_input(tmp_path, capsys):
    from napari_xaimed.io import write_volume

    write_volume(tmp_path / "flat.nii.gz", np.zeros((8, 8, 8), np.float32))
    code = main(["register", str(tmp_path / "flat.nii.gz"), str(tmp_path / "flat.nii.gz"),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "constant" in capsys.readouterr().err


def test_segment_command_writes_labels_on_the_image_grid(tmp_path, capsys):
    from napari_xaimed.io import write_volume
    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation import segment

    sample = lesion_volume(seed=2, spacing=(2.0, 1.0, 1.0))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # NIfTI (x, y, z) order
    affine[:3, 3] = (-30.0, 12.5, 7.0)
    write_volume(tmp_path / "ct.nii.gz", sample.image, affine=affine)
    params = {"classes": 4, "smoothing_mm": 1.0, "min_size_mm3": 20.0, "opening_mm": 1.0,
              "fill_holes": True}
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out"),
                 "--method", "otsu", "--classes", "4", "--smoothing-mm", "1",
                 "--min-size-mm3", "20", "--opening-mm", "1", "--fill-holes"]) == 0
    labels = read_volume(tmp_path / "out" / "labels.nii.gz")
    assert labels.is_label and labels.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_allclose(labels.affine, affine)
    expected = segment(sample.image, "otsu", spacing=sample.spacing, **params)
    np.testing.assert_array_equal(labels.data, expected)
    facts = json.loads((tmp_path / "out" / "segmentation.json").read_text())
    assert facts["kind"] == "segmentation" and facts["params"]["method"] == "otsu"
    assert facts["facts"]["instances"] == int(expected.max()) == sample.lesions.max()
    assert labels.metadata["params"]["opening_mm"] == 1.0  # the sidecar beside the labels
    assert not list((tmp_path / "out").glob("probability*"))
    assert "instances" in capsys.readouterr().out


def test_segment_command_writes_class_probabilities(tmp_path):
    from napari_xaimed.io import write_volume

    rng = np.random.default_rng(0)
    image = np.zeros((20, 24, 24), np.float32)
    image[3:17, 3:21, 3:9], image[3:17, 3:21, 9:15], image[3:17, 3:21, 15:21] = 2, 3, 4
    image[3:17, 3:21, 3:21] += rng.normal(0, 0.2, (14, 18, 18))
    write_volume(tmp_path / "mr.nii.gz", image, spacing=(3.0, 1.0, 0.5))
    assert main(["segment", str(tmp_path / "mr.nii.gz"), "--out", str(tmp_path / "out"),
                 "--method", "kmeans", "--n-classes", "3"]) == 0
    labels = read_volume(tmp_path / "out" / "labels.nii.gz")
    assert labels.spacing == (3.0, 1.0, 0.5)
    # three tissue blocks along x, classes in order of intensity
    assert (labels.data[5:15, 5:19, 4:8] == 1).mean() > 0.95
    assert (labels.data[5:15, 5:19, 10:14] == 2).mean() > 0.95
    assert (labels.data[5:15, 5:19, 16:20] == 3).mean() > 0.95
    probabilities = [read_volume(tmp_path / "out" / f"probability_class{k}.nii.gz")
                     for k in (1, 2, 3)]
    assert all(p.spacing == (3.0, 1.0, 0.5) and not p.is_label for p in probabilities)
    stacked = np.stack([p.data for p in probabilities])
    inside = labels.data > 0
    assert ((stacked[:, inside].argmax(0) + 1) == labels.data[inside]).mean() > 0.98


def test_segment_command_refuses_options_of_other_methods(tmp_path, capsys):
    from napari_xaimed.io import write_volume

    write_volume(tmp_path / "v.nii.gz", np.arange(512, dtype=np.float32).reshape(8, 8, 8))
    code = main(["segment", str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "out"),
                 "--method", "multiotsu", "--opening-mm", "2"])
    assert code == 2
    assert "does not take opening_mm" in capsys.readouterr().err


def test_segment_command_runs_a_model_and_writes_its_foreground_probability(tmp_path):
    from napari_xaimed.io import write_volume
    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation import segment_with_model

    sample = lesion_volume(seed=4, spacing=(2.0, 1.0, 1.0))
    write_volume(tmp_path / "ct.nii.gz", sample.image, spacing=sample.spacing)
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out"),
                 "--method", "model", "--roi-size", "32", "--overlap", "0.5"]) == 0
    expected = segment_with_model(sample.image, "bundled-segmenter", spacing=sample.spacing,
                                  roi_size=32, overlap=0.5)
    labels = read_volume(tmp_path / "out" / "labels.nii.gz")
    probability = read_volume(tmp_path / "out" / "probability_foreground.nii.gz")
    np.testing.assert_array_equal(labels.data, expected.labels)
    np.testing.assert_allclose(probability.data, expected.probability, atol=1e-6)
    assert probability.spacing == (2.0, 1.0, 1.0)
    assert (2 * (sample.mask & (labels.data > 0)).sum()
            / (sample.mask.sum() + (labels.data > 0).sum())) > 0.8


def test_segment_command_on_a_zarr_runs_slab_by_slab_into_a_zarr(tmp_path, capsys):
    """A Zarr input (or a NIfTI with --lazy) is segmented slab by slab into labels.zarr: the
    labels of the in-memory segmentation, on the image's grid; what needs the whole volume is
    refused with what to do."""
    from napari_xaimed.io import write_volume
    from napari_xaimed.io.lazy import write_zarr
    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation import segment, segment_with_model

    sample = lesion_volume(seed=2, spacing=(2.0, 1.0, 1.0))
    write_zarr(tmp_path / "ct.zarr", sample.image, sample.spacing, origin=(5.0, -3.0, 1.0),
               chunks=(8, 64, 64))
    assert main(["segment", str(tmp_path / "ct.zarr"), "--out", str(tmp_path / "out"),
                 "--method", "otsu", "--classes", "4", "--min-size-mm3", "20"]) == 0
    assert "slab by slab" in capsys.readouterr().out
    labels = read_volume(tmp_path / "out" / "labels.zarr")
    assert labels.spacing == (2.0, 1.0, 1.0) and labels.translate == (5.0, -3.0, 1.0)
    expected = segment(sample.image, "otsu", spacing=sample.spacing, classes=4,
                       min_size_mm3=20.0)
    np.testing.assert_array_equal(np.asarray(labels.data), expected)
    prov = json.loads((tmp_path / "out" / "segmentation.json").read_text())
    assert prov["facts"]["instances"] == int(expected.max())
    assert prov["inputs"]["image"]["sha256"] is None  # not read whole to hash it
    assert not list((tmp_path / "out").glob("*.nii*"))

    write_volume(tmp_path / "ct.nii", sample.image, spacing=sample.spacing)
    assert main(["segment", str(tmp_path / "ct.nii"), "--lazy", "--out", str(tmp_path / "m"),
                 "--method", "model", "--roi-size", "32", "--overlap", "0.5"]) == 0
    model = segment_with_model(sample.image, "bundled-segmenter", spacing=sample.spacing,
                               roi_size=32, overlap=0.5)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "m" / "labels.zarr").data),
                                  model.labels)
    np.testing.assert_allclose(
        np.asarray(read_volume(tmp_path / "m" / "probability_foreground.zarr").data),
        model.probability, atol=1e-5)

    for options, words in ((["--method", "otsu", "--smoothing-mm", "1"], "not done lazily"),
                           (["--method", "model", "--min-size-mm3", "5"], "min_size_mm3"),
                           (["--method", "model", "--largest-component"], "components")):
        code = main(["segment", str(tmp_path / "ct.zarr"), "--out", str(tmp_path / "x"),
                     *options])
        assert code == 2 and words in capsys.readouterr().err


def test_register_command_on_zarr_stores_registers_downsampled_copies(tmp_path, capsys):
    """Zarr inputs: ANTs on block-mean copies (--max-voxels), the moving image warped at full
    resolution into warped.zarr, equal to register_lazy's; the field on the coarse grid."""
    from napari_xaimed.io.lazy import write_zarr
    from napari_xaimed.registration.lazy import register_lazy
    from napari_xaimed.samples import longitudinal_pair

    pair = longitudinal_pair((32, 48, 48), spacing=(1.5, 1.0, 1.0), seed=1)
    origin = (1.0, 2.0, -3.0)
    for name, data in (("fixed", pair.fixed), ("moving", pair.moving)):
        write_zarr(tmp_path / f"{name}.zarr", data, pair.spacing, origin=origin,
                   chunks=(8, 48, 48))
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "fixed.zarr"), str(tmp_path / "moving.zarr"),
                 "--out", str(out), "--transform", "Affine",
                 "--max-voxels", str(16 * 24 * 24)]) == 0
    assert "downsampled by (2, 2, 2)" in capsys.readouterr().out
    warped = read_volume(out / "warped.zarr")
    assert warped.data.shape == pair.fixed.shape and warped.spacing == pair.spacing
    assert warped.translate == origin
    expected = register_lazy(read_volume(tmp_path / "fixed.zarr"),
                             read_volume(tmp_path / "moving.zarr"), transform="Affine",
                             seed=0, max_voxels=16 * 24 * 24, out=tmp_path / "expected.zarr")
    np.testing.assert_allclose(np.asarray(warped.data), np.asarray(expected.warped),
                               atol=1e-5)
    field = read_volume(out / "displacement.nii.gz")
    assert field.data.shape == (3, 16, 24, 24)
    assert field.spacing == (3.0, 2.0, 2.0)
    np.testing.assert_allclose(field.translate, np.add(origin, (0.75, 0.5, 0.5)))
    quality = json.loads((out / "quality.json").read_text())
    assert quality["result"]["fixed_factors"] == [2, 2, 2]
    assert quality["result"]["metrics"]["ncc_after"] > quality["result"]["metrics"][
        "ncc_before"]


def test_cohort_evaluate_takes_cldice_on_request():
    """`evaluate --cohort` computes the default metrics (no clDice) unless `--cldice` is given."""
    from napari_xaimed.cli.cohort import _job
    from napari_xaimed.cli.main import build_parser
    from napari_xaimed.evaluation import DEFAULT_METRICS

    base = ["evaluate", "--cohort", "cases.csv", "--out", "out"]
    assert _job(build_parser().parse_args(base)).params["metrics"] == list(DEFAULT_METRICS)
    assert "cldice" not in DEFAULT_METRICS
    job = _job(build_parser().parse_args([*base, "--cldice"]))
    assert job.params["metrics"] == [*DEFAULT_METRICS, "cldice"]
    job = _job(build_parser().parse_args([*base, "--metrics", "hd95,cldice", "--cldice"]))
    assert job.params["metrics"] == ["hd95", "cldice"]
