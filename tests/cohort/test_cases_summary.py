"""The case list and the cohort statistics (no cluster needed)."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from napari_xaimed import XaimedError
from napari_xaimed.cohort import (
    Case,
    EvaluationJob,
    attribution_ranking,
    bootstrap_mean_ci,
    describe,
    evaluation_summary,
    read_cases,
    run_cohort,
)


def _csv(tmp_path, text):
    path = tmp_path / "cases.csv"
    path.write_text(text)
    return path


def test_case_list_resolves_relative_paths_and_keeps_optional_cells(tmp_path):
    path = _csv(tmp_path, "case_id,image,mask\na,img/a.nii.gz,\nb,/data/b.nii.gz,b_mask.nii\n")
    cases = read_cases(path, ("image",), ("mask",))
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[0].files == {"image": (tmp_path / "img" / "a.nii.gz").resolve()}
    assert cases[1].files["image"].as_posix() == "/data/b.nii.gz"
    assert cases[1].files["mask"] == (tmp_path / "b_mask.nii").resolve()


@pytest.mark.parametrize("text, message", [
    ("case_id,reference\na,r.nii\n", "lacks the column(s) ['prediction']"),
    ("case_id,reference,prediction\na,r.nii,p.nii\na,r2.nii,p2.nii\n", "listed twice"),
    ("case_id,reference,prediction\na/b,r.nii,p.nii\na_b,r2.nii,p2.nii\n", "same file name"),
    ("case_id,reference,prediction\n,r.nii,p.nii\n", "case_id is empty"),
    ("case_id,reference,prediction\na,r.nii,\n", "prediction path is empty"),
    ("case_id,reference,prediction\n", "lists no cases"),
])
def test_case_list_errors_say_what_to_fix(tmp_path, text, message):
    with pytest.raises(XaimedError, match=re.escape(message)):
        read_cases(_csv(tmp_path, text), ("reference", "prediction"))


def test_case_ids_that_differ_only_in_letter_case_are_refused_naming_both(tmp_path):
    # On macOS and Windows (case-insensitive by default) cases/Case01.json and cases/case01.json
    # are one file: the second case would overwrite the first's record and heatmaps.
    path = _csv(tmp_path, "case_id,reference,prediction\nCase01,r.nii,p.nii\n"
                "b,r.nii,p.nii\ncase01,r2.nii,p2.nii\n")
    with pytest.raises(XaimedError, match=r"line 4: case ids 'Case01' and 'case01' differ only "
                       r"in letter case .*case-insensitive file system.*rename one"):
        read_cases(path, ("reference", "prediction"))
    # the Angstrom sign and A-ring are one file name where names are compared normalised (macOS)
    path = _csv(tmp_path, "case_id,reference,prediction\n\u212b-1,r.nii,p.nii\n"
                "\u00c5-1,r2.nii,p2.nii\n")
    with pytest.raises(XaimedError, match="differ only in letter case"):
        read_cases(path, ("reference", "prediction"))
    # cases built in a script are checked by the run, before any cluster starts or file is read
    cases = [Case("LIVER-7", {"reference": tmp_path / "r", "prediction": tmp_path / "p"}),
             Case("liver-7", {"reference": tmp_path / "r", "prediction": tmp_path / "p"})]
    with pytest.raises(XaimedError, match="'LIVER-7' and 'liver-7' differ only in letter case"):
        run_cohort(EvaluationJob(), cases, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_bootstrap_interval_agrees_with_scipy():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=60)
    low, high = bootstrap_mean_ci(values, resamples=20000, seed=3)
    ref = stats.bootstrap((values,), np.mean, n_resamples=20000, method="percentile",
                          random_state=np.random.default_rng(4)).confidence_interval
    # two Monte Carlo estimates of the same quantiles: close to a small share of the width
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.05 * width and abs(high - ref.high) < 0.05 * width
    # and both near the normal theory interval mean +- 1.96 s / sqrt(n)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert abs((high - low) / 2 - half) < 0.1 * half


def test_cluster_bootstrap_resamples_whole_cases():
    values = np.array([1.0, 2.0, 3.0, 10.0, np.nan, 4.0])
    clusters = np.array(["a", "a", "b", "c", "c", "d"])
    low, high = bootstrap_mean_ci(values, clusters, resamples=500, seed=7)
    # by hand: the same draws over the 4 cases (sums 3, 3, 10, 4; counts 2, 1, 1, 1)
    rng = np.random.default_rng(7)
    draw = rng.integers(0, 4, size=(500, 4))
    sums, counts = np.array([3.0, 3.0, 10.0, 4.0]), np.array([2.0, 1.0, 1.0, 1.0])
    expected = np.percentile(sums[draw].sum(1) / counts[draw].sum(1), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected))
    # one value per cluster is the plain bootstrap
    plain = np.array([1.0, 5.0, 2.0, 8.0])
    assert bootstrap_mean_ci(plain, ["w", "x", "y", "z"], seed=2) == bootstrap_mean_ci(plain,
                                                                                        seed=2)


def test_bootstrap_needs_two_cases():
    assert all(math.isnan(v) for v in bootstrap_mean_ci([np.nan, 3.0]))
    summary = describe([np.nan, 3.0])
    assert summary["n"] == 1 and summary["mean"] == 3.0 and math.isnan(summary["ci_low"])


def test_evaluation_summary_by_hand():
    cases = pd.DataFrame([
        {"case_id": "a", "status": "ok", "class": "lesion", "pq": 0.5, "sq": 0.8, "tp": 3},
        {"case_id": "b", "status": "ok", "class": "lesion", "pq": 0.7, "sq": 0.9, "tp": 4},
        {"case_id": "c", "status": "error", "error": "broken"},
        {"case_id": "d", "status": "ok", "class": "lesion", "pq": 0.0, "sq": math.nan, "tp": 0},
    ])
    instances = pd.DataFrame([
        {"case_id": "a", "class_name": "lesion", "accepted": True, "dice": 0.8},
        {"case_id": "a", "class_name": "lesion", "accepted": True, "dice": 0.6},
        {"case_id": "b", "class_name": "lesion", "accepted": True, "dice": 1.0},
        {"case_id": "b", "class_name": "lesion", "accepted": False, "dice": 0.1},
    ])
    summary = evaluation_summary(cases, instances).set_index(["metric", "level"])
    assert summary.loc[("pq", "case"), "mean"] == pytest.approx(0.4)
    assert summary.loc[("pq", "case"), "n"] == 3
    assert summary.loc[("sq", "case"), "n"] == 2  # the case without TP has no SQ
    assert ("tp", "case") not in summary.index
    dice = summary.loc[("dice", "instance")]
    assert dice["mean"] == pytest.approx(0.8) and dice["n"] == 3 and dice["n_cases"] == 2


def test_ranking_across_cases_by_hand():
    rows = []
    for case, (a, b) in {"x": (0.9, 0.2), "y": (0.8, 0.3), "z": (0.1, 0.6)}.items():
        rows += [{"case_id": case, "status": "ok", "method": "A", "auroc": a,
                  "pointing_game": 1.0},
                 {"case_id": case, "status": "ok", "method": "B", "auroc": b,
                  "pointing_game": 1.0}]
    ranking = attribution_ranking(pd.DataFrame(rows), ["auroc", "pointing_game"])
    # per case: the winner of auroc ranks 1, the other 2; the pointing game ties at 1.5 each
    assert list(ranking["method"]) == ["A", "B"]
    assert ranking["mean_rank"].tolist() == pytest.approx([(1.25 * 2 + 1.75) / 3,
                                                           (1.75 * 2 + 1.25) / 3])
    assert ranking["cases_won"].tolist() == [2.0, 1.0]
