"""Cohort runs on a real two-worker Dask cluster: results, failures, resume, a dying worker."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from monai.networks.nets import Classifier
from scipy import ndimage as ndi

from napari_xaimed import XaimedError
from napari_xaimed.attribution import attribute, load_model, truth_scores
from napari_xaimed.cli.main import main
from napari_xaimed.cohort import (
    AttributionJob,
    EvaluationJob,
    read_cases,
    run_cohort,
    run_cohort_steps,
)
from napari_xaimed.cohort.sample import write_sample_cohort
from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import read_volume

PARTS = {"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}
# The dying job below is defined here: ship it to the workers by value, not by import.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """10 synthetic cases; case 8's prediction is truncated, case 9's reference is missing."""
    folder = tmp_path_factory.mktemp("cohort")
    csv = write_sample_cohort(folder, 10, shape=(40, 40, 40), seed=5)
    broken = folder / "case008_pred.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    (folder / "case009_ref.nii.gz").unlink()
    return csv


def _direct_pq(csv: Path, case_id: str) -> float:
    folder = csv.parent
    ref = read_volume(folder / f"{case_id}_ref.nii.gz")
    pred = read_volume(folder / f"{case_id}_pred.nii.gz")
    return evaluate(ref.data, pred.data, spacing=ref.spacing, parts=PARTS)["lesion"]


def test_evaluation_cohort_records_failures_and_matches_single_case_results(client, cohort,
                                                                            tmp_path):
    cases = read_cases(cohort, ("reference", "prediction"))
    result = run_cohort(EvaluationJob({"parts": PARTS}), cases, tmp_path, scheduler=client)
    assert (result.ran, result.skipped, result.failed) == (10, 0, 2)
    table = result.cases.set_index("case_id")
    assert "case008_pred.nii.gz" in table.loc["case008", "error"]
    assert "truncated" in table.loc["case008", "error"]
    assert "cannot read an input file" in table.loc["case009", "error"]
    for case_id in ("case000", "case003", "case007"):
        direct = _direct_pq(cohort, case_id)
        row = table.loc[case_id]
        assert row["status"] == "ok"
        assert row["pq"] == pytest.approx(direct.pq, abs=1e-12)
        assert row["part_aware_pq"] == pytest.approx(direct.part_aware_pq, abs=1e-12)
        rows = result.instances[result.instances["case_id"] == case_id]
        assert len(rows) == len(direct.rows)
        assert sorted(rows["hd95"].dropna()) == pytest.approx(
            sorted(r.hd95 for r in direct.rows if not np.isnan(r.hd95)))
    # the tables on disk: CSV and Parquet hold the same rows
    parquet = pd.read_parquet(tmp_path / "cases.parquet")
    assert parquet["case_id"].tolist() == pd.read_csv(tmp_path / "cases.csv")["case_id"].tolist()
    assert len(pd.read_parquet(tmp_path / "instances.parquet")) == len(result.instances)
    summary = result.summary.set_index(["metric", "level"])
    ok = table[table["status"] == "ok"]
    assert summary.loc[("pq", "case"), "mean"] == pytest.approx(ok["pq"].mean())
    assert summary.loc[("pq", "case"), "n"] == 8
    assert summary.loc[("pq", "case"), "ci_low"] <= ok["pq"].mean() <= summary.loc[
        ("pq", "case"), "ci_high"]
    assert ("pq_core", "case") in summary.index and ("dice", "instance") in summary.index


def test_rerun_skips_finished_cases_and_redoes_changed_ones(client, cohort, tmp_path):
    cases = read_cases(cohort, ("reference", "prediction"))
    job = EvaluationJob({"parts": PARTS})
    run_cohort(job, cases, tmp_path, scheduler=client)
    again = run_cohort(job, cases, tmp_path, scheduler=client)
    # finished cases are skipped; failed ones are tried again (and fail again)
    assert (again.ran, again.skipped, again.failed) == (2, 8, 2)
    # a changed input file redoes just that case
    changed = cohort.parent / "case002_pred.nii.gz"
    volume = read_volume(changed)
    from napari_xaimed.io import write_volume
    write_volume(changed, np.zeros_like(volume.data), volume.spacing, is_label=True)
    try:
        third = run_cohort(job, cases, tmp_path, scheduler=client)
        assert (third.ran, third.skipped) == (3, 7)
        assert third.cases.set_index("case_id").loc["case002", "pq"] == 0.0
    finally:
        write_sample_cohort(cohort.parent / "restore", 3, shape=(40, 40, 40), seed=5)
        os.replace(cohort.parent / "restore" / "case002_pred.nii.gz", changed)
    # other parameters redo everything
    fourth = run_cohort(EvaluationJob({"parts": PARTS, "threshold": 0.3}), cases, tmp_path,
                        scheduler=client)
    assert fourth.ran == 10 and fourth.skipped == 0


@dataclass
class DiesOnce(EvaluationJob):
    """Kills its worker process the first time it meets ``victim``."""

    victim: str = ""
    marker: str = ""

    def run(self, case):
        if case.case_id == self.victim and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return super().run(case)


def test_a_worker_that_dies_loses_no_case(client, cohort, tmp_path):
    cases = read_cases(cohort, ("reference", "prediction"))[:6]
    marker = tmp_path / "died"
    job = DiesOnce({"parts": PARTS}, victim="case003", marker=str(marker))
    result = run_cohort(job, cases, tmp_path / "out", scheduler=client)
    assert marker.exists()  # a worker really died
    assert (result.ran, result.failed) == (6, 0)
    assert result.cases.set_index("case_id").loc["case003", "pq"] == pytest.approx(
        _direct_pq(cohort, "case003").pq)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


def test_cancelled_run_keeps_finished_cases_for_the_next(client, cohort, tmp_path):
    cases = read_cases(cohort, ("reference", "prediction"))[:8]
    job = EvaluationJob({"parts": PARTS})
    steps = run_cohort_steps(job, cases, tmp_path, scheduler=client)
    for step in steps:
        if step.done >= 2 and step.message.startswith("case"):
            break
    steps.close()
    records = list((tmp_path / "cases").glob("*.json"))
    assert 2 <= len(records) <= 8
    resumed = run_cohort(job, cases, tmp_path, scheduler=client)
    assert resumed.skipped == len(records) and resumed.ran == 8 - len(records)
    assert resumed.failed == 0


def test_attribution_cohort_writes_heatmaps_metrics_and_ranking(client, tmp_path):
    csv = write_sample_cohort(tmp_path / "in", 3, kind="attribution", shape=(48, 48, 48))
    out = tmp_path / "out"
    code = main(["attribute", "--cohort", str(csv), "--out", str(out), "--method",
                 "saliency,gradcam", "--device", "cpu", "--scheduler",
                 client.scheduler.address])
    assert code == 0
    table = pd.read_parquet(out / "cases.parquet")
    assert len(table) == 6 and set(table["status"]) == {"ok"}
    image = read_volume(csv.parent / "case001_image.nii.gz")
    mask = read_volume(csv.parent / "case001_mask.nii.gz").data > 0
    heatmap = read_volume(out / "outputs" / "case001" / "gradcam.nii.gz")
    assert heatmap.spacing == image.spacing
    assert heatmap.metadata["params"]["method"] == "gradcam"
    direct = attribute(load_model("bundled"), image.data, "gradcam", device="cpu",
                       spacing=image.spacing)
    np.testing.assert_allclose(heatmap.data, direct.map, rtol=1e-5, atol=1e-6)
    row = table[(table["case_id"] == "case001") & (table["method"] == "gradcam")].iloc[0]
    for metric, value in truth_scores(direct.map, mask, spacing=image.spacing).items():
        assert row[metric] == pytest.approx(value, abs=1e-6)
    # each heatmap's JSON reruns it: same inputs (SHA-256), same map
    assert main(["rerun", str(out / "outputs" / "case001" / "saliency.json"), "--check"]) == 0
    # relevance per structure of the mask, per case and method
    structures = pd.read_csv(out / "structures.csv")
    mine = structures[(structures["case_id"] == "case001") & (structures["method"] == "gradcam")]
    comps, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
    assert len(mine) == n
    biggest = np.argmax(np.bincount(comps.ravel())[1:]) + 1
    row = mine.sort_values("voxels").iloc[-1]
    assert row["voxels"] == np.count_nonzero(comps == biggest)
    assert row["sum"] == pytest.approx(float(direct.map[comps == biggest].sum()), rel=1e-5)
    ranking = pd.read_csv(out / "ranking.csv")
    assert sorted(ranking["method"]) == ["gradcam", "saliency"]
    assert ranking["cases_won"].sum() == pytest.approx(3.0)


def test_cli_evaluate_exit_code_and_bad_settings(client, cohort, tmp_path, capsys):
    args = ["evaluate", "--cohort", str(cohort), "--out", str(tmp_path), "--scheduler",
            client.scheduler.address, "--parts", '{"lesion": {"thing": [1, 2], '
            '"parts": {"core": [2]}}}']
    assert main(args) == 1  # finished, but two cases failed: see the table
    assert "10 cases: 10 run, 0 already finished, 2 failed" in capsys.readouterr().out
    assert (tmp_path / "summary.csv").is_file()
    assert main([*args[:-2], "--threshold", "1.5"]) == 2
    assert "threshold must lie in [0, 1]" in capsys.readouterr().err
    with pytest.raises(XaimedError, match="unknown method"):
        AttributionJob(methods=["nonsense"]).check()


def test_evaluation_rows_and_cli_say_which_label_mode_ran(client, tmp_path, capsys):
    """Issue 27 item 8: a multi-label semantic case is a class per label value (and their mean)
    by default, one Panoptica-style class on request; every row and the command's output say
    which mode ran."""
    from napari_xaimed.io import write_volume
    from napari_xaimed.io.cases import Case

    ref = np.zeros((10, 14, 10), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[2:8, 8:11, 2:8] = 2  # touches value 1
    pred = np.zeros_like(ref)
    pred[2:8, 2:8, 2:8] = 1  # value 2 missed
    files = {"reference": tmp_path / "ref.nii.gz", "prediction": tmp_path / "pred.nii.gz"}
    write_volume(files["reference"], ref, spacing=(2.0, 1.0, 1.0))
    write_volume(files["prediction"], pred, spacing=(2.0, 1.0, 1.0))
    case = Case("spine", files)
    rows = EvaluationJob({"metrics": []}).run(case).rows
    assert [(r["class"], r["tp"], r["fn"], r["label_mode"]) for r in rows] == [
        ("1", 1, 0, "per_label"), ("2", 0, 1, "per_label"),
        ("mean over classes", 1, 1, "per_label")]
    (row,) = EvaluationJob({"metrics": [], "label_mode": "panoptica"}).run(case).rows
    assert (row["class"], row["tp"], row["fn"], row["label_mode"]) == ("all", 1, 1, "panoptica")

    (tmp_path / "cases.csv").write_text("case_id,reference,prediction\n"
                                        "spine,ref.nii.gz,pred.nii.gz\n")
    args = ["evaluate", "--cohort", str(tmp_path / "cases.csv"), "--scheduler",
            client.scheduler.address, "--metrics", ""]
    assert main([*args, "--out", str(tmp_path / "a"), "--label-mode", "panoptica"]) == 0
    assert "Labels: Panoptica-compatible" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "a" / "cases.csv")["label_mode"]) == ["panoptica"]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "each label value is its own class (per_label)" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "b" / "cases.csv")
    assert list(table["class"].astype(str)) == ["1", "2", "mean over classes"]


class RegisteredClassifier(Classifier):
    """A script's own network (here a MONAI one under another name); this module is shipped
    to the workers by value, as a script's ``__main__`` would be."""


def test_trust_and_registered_networks_travel_with_the_job(client, tmp_path, capsys,
                                                           monkeypatch):
    """A worker is another process: the leave to run a model file's code (--trust) and the
    networks the script registered go to it with the job, and nothing runs without them."""
    import json

    import torch

    from napari_xaimed.attribution import register_network
    from napari_xaimed.models import trust as trust_module

    csv = write_sample_cohort(tmp_path / "in", 2, kind="attribution", shape=(40, 40, 40))
    args = {"in_shape": [1, 8, 8, 8], "classes": 2, "channels": [2, 4], "strides": [2, 2]}
    torch.manual_seed(3)
    weights = tmp_path / "clf.pt"
    torch.save(Classifier(**args).state_dict(), weights)
    sidecar = {"network": "monai.networks.nets.classifier:Classifier", "args": args,
               "preprocessing": {"input_size": [8, 8, 8]}}
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    out = tmp_path / "out"
    command = ["attribute", "--cohort", str(csv), "--out", str(out), "--method", "saliency",
               "--model", str(weights), "--device", "cpu", "--scheduler",
               client.scheduler.address]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "'monai.networks.nets.classifier:Classifier'" in err and "--trust" in err
    assert not (out / "run.json").exists()  # refused before any case was sent out

    assert main([*command, "--trust"]) == 0
    assert set(pd.read_parquet(out / "cases.parquet")["status"]) == {"ok"}
    image = read_volume(csv.parent / "case001_image.nii.gz")
    direct = attribute(load_model(weights, trust=True), image.data, "saliency", device="cpu",
                       spacing=image.spacing)
    heatmap = read_volume(out / "outputs" / "case001" / "saliency.nii.gz")
    np.testing.assert_allclose(heatmap.data, direct.map, rtol=1e-5, atol=1e-6)
    assert heatmap.metadata["model"]["trusted"] is True

    monkeypatch.setattr(trust_module, "_REGISTERED", {})
    register_network("RegisteredClassifier", RegisteredClassifier)
    weights.with_suffix(".json").write_text(json.dumps({**sidecar,
                                                        "network": "RegisteredClassifier"}))
    job = AttributionJob(model=str(weights), methods=["saliency"], params={"device": "cpu"})
    result = run_cohort(job, read_cases(csv, job.required, job.optional), tmp_path / "out2",
                        scheduler=client.scheduler.address)
    assert result.failed == 0, pd.read_parquet(tmp_path / "out2" / "cases.parquet")["error"]
    again = read_volume(tmp_path / "out2" / "outputs" / "case001" / "saliency.nii.gz")
    np.testing.assert_allclose(again.data, direct.map, rtol=1e-5, atol=1e-6)
    assert again.metadata["model"]["trusted"] is False


def test_attribution_job_takes_the_cam_family_and_writes_attributes_maps(tmp_path):
    """Every CAM variant, with its own parameters, through the cohort job as a worker runs it
    (no cluster needed): each heatmap is the map ``attribute`` gives, with what it cost
    (``passes``) in its JSON."""
    import json

    methods = ["gradcam_pp", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam",
               "eigencam"]
    csv = write_sample_cohort(tmp_path / "in", 1, kind="attribution", shape=(32, 32, 32))
    (case,) = read_cases(csv, ("image",), ("mask",))
    job = AttributionJob(methods=methods, params={"device": "cpu"},
                         method_params={"scorecam": {"channels": 8}})
    job.check()
    outcome = job.run(case)
    assert outcome.status == "ok", outcome.error
    assert [row["method"] for row in outcome.rows] == methods
    image = read_volume(case.files["image"])
    for method, output in zip(methods, outcome.outputs, strict=True):
        folder = tmp_path / "out" / method
        folder.mkdir(parents=True)
        for name, data in output.files.items():
            (folder / name).write_bytes(data)
        written = read_volume(folder / f"{method}.nii.gz")
        direct = attribute(load_model("bundled"), image.data, method, device="cpu",
                           spacing=image.spacing, **job.method_params.get(method, {}))
        np.testing.assert_allclose(written.data, direct.map, rtol=1e-5, atol=1e-7,
                                   err_msg=method)
        meta = json.loads((folder / f"{method}.json").read_text())
        assert meta["params"]["passes"] == direct.params["passes"]
    with pytest.raises(XaimedError, match="channels must be at least 1"):
        AttributionJob(methods=["ablationcam"], method_params={"ablationcam": {"channels": 0}}
                       ).check()
