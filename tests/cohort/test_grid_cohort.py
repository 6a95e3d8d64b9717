"""``napari-xaimed evaluate --cohort`` on one grid: a reference and prediction whose origins
differ by float noise after a file round trip (Panoptica's spine pair: 0.00064 mm) are
evaluated; a prediction half a voxel off is a failed case that says which numbers differ, and
so is an image and mask of an attribution cohort (issue 27, item 7)."""


import numpy as np
import pandas as pd
import pytest
from _spine import spine_labels as labels
from _spine import write_spine as write

from napari_xaimed.cli.main import main
from napari_xaimed.cohort import AttributionJob
from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import read_volume
from napari_xaimed.io.cases import Case


def test_cli_evaluate_accepts_a_round_trip_and_refuses_half_a_voxel(client, tmp_path, capsys):
    prediction = labels()
    prediction[6:9, 3:7, 1:5] = 0
    write(tmp_path / "ref.nii.gz", labels())
    write(tmp_path / "pred.nii.gz", prediction, -0.00064, -0.00064)
    write(tmp_path / "moved.nii.gz", prediction, 0.58594 / 2)
    (tmp_path / "cases.csv").write_text(
        "case_id,reference,prediction\nspine,ref.nii.gz,pred.nii.gz\n"
        "shifted,ref.nii.gz,moved.nii.gz\n")
    out = tmp_path / "out"
    assert main(["evaluate", "--cohort", str(tmp_path / "cases.csv"), "--out", str(out),
                 "--scheduler", client.scheduler.address]) == 1  # the shifted case failed
    table = pd.read_csv(out / "cases.csv")
    spine = table[table["case_id"] == "spine"]
    assert set(spine["status"]) == {"ok"}, list(spine["error"])
    ref, pred = read_volume(tmp_path / "ref.nii.gz"), read_volume(tmp_path / "pred.nii.gz")
    direct = evaluate(ref.data, pred.data, spacing=ref.spacing)
    expected = {str(row["class"]): row["pq"] for row in direct.summary_rows()}
    assert dict(zip(spine["class"].astype(str), spine["pq"], strict=True)) == \
        pytest.approx(expected)
    (error,) = table.loc[table["case_id"] == "shifted", "error"]
    assert "the reference ref.nii.gz and the prediction moved.nii.gz do not overlay" in error
    assert "153.269" in error and "153.562" in error and "0.293 mm apart" in error


def test_attribution_case_with_a_mask_off_the_image_grid_fails_with_the_numbers(tmp_path):
    image = labels().astype(np.float32)
    write(tmp_path / "ct.nii.gz", image)
    write(tmp_path / "mask.nii.gz", labels(), dz=1.0)  # 1.7 voxels
    outcome = AttributionJob().run(Case("c", {"image": tmp_path / "ct.nii.gz",
                                              "mask": tmp_path / "mask.nii.gz"}))
    assert outcome.status == "error"
    assert "the image ct.nii.gz and the mask mask.nii.gz do not overlay" in outcome.error
    assert "(-12.24, 153.27, 202.26) and (-12.24, 153.27, 203.26) mm are 1 mm apart" in \
        outcome.error
