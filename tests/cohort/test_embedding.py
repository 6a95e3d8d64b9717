"""A cohort's latent space on a real two-worker Dask cluster: the embeddings, projection and
confounder scores equal the in-process ones (tested against known truths in
tests/attribution/test_latent.py), the metadata lands beside the projection, bad columns are
refused before any case runs."""

import csv

import numpy as np
import pandas as pd
import pytest

from napari_xaimed import XaimedError
from napari_xaimed.attribution import confounder_scores, embed, load_model
from napari_xaimed.cli.main import main
from napari_xaimed.cohort import (
    EmbeddingJob,
    case_metadata,
    load_embeddings,
    load_result,
    read_cases,
    run_cohort,
)
from napari_xaimed.cohort.sample import write_sample_cohort
from napari_xaimed.io import read_volume

N = 10


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """10 lesion images with metadata: "lesions" (their number), "age" (noise), "scanner"
    (text); case 9's image is truncated."""
    folder = tmp_path_factory.mktemp("latent")
    listed = write_sample_cohort(folder, N, kind="attribution", shape=(32, 32, 32),
                                  spacing=(2.0, 2.0, 2.0), seed=2)
    rows = list(csv.DictReader(open(listed)))
    rng = np.random.default_rng(1)
    for i, row in enumerate(rows):
        row.update(lesions=str(1 + i % 2), age=f"{rng.normal(60, 10):.1f}",
                   scanner=rng.choice(["A", "B"]))
    broken = folder / rows[9]["image"]
    broken.write_bytes(broken.read_bytes()[:200])
    with open(folder / "latent.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "latent.csv"


def test_embedding_cohort_matches_the_in_process_latent_space(client, cohort, tmp_path):
    cases = read_cases(cohort, ("image",))
    job = EmbeddingJob(target=1, params={"device": "cpu"},
                       confounders=["lesions", "age", "scanner"])
    result = run_cohort(job, cases, tmp_path, scheduler=client)
    assert (result.ran, result.failed) == (N, 1)
    table = result.cases.set_index("case_id")
    assert "truncated" in table.loc["case009", "error"] or "case009" in table.loc[
        "case009", "error"]
    ok = [c for c in cases if c.case_id != "case009"]
    direct = embed(load_model("bundled"), [read_volume(c.files["image"]).data for c in ok],
                   ids=[c.case_id for c in ok], target=1, device="cpu")
    stored = load_embeddings(tmp_path)
    assert stored.ids == direct.ids and stored.layer == direct.layer and stored.target == 1
    np.testing.assert_allclose(stored.vectors, direct.vectors, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stored.decision, direct.decision, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(stored.predicted, direct.predicted)

    latent = result.latent.set_index("case_id")
    assert list(latent.index) == direct.ids
    assert {"pca_1", "pca_2", "predicted", "lesions", "age", "scanner", "mask"} <= set(latent)
    np.testing.assert_allclose(latent["age"], [float(c.metadata["age"]) for c in ok])
    # the scatter of the stored table is the projection of the stored embeddings
    from napari_xaimed.attribution import project

    np.testing.assert_allclose(np.abs(latent[["pca_1", "pca_2"]].to_numpy()),
                               np.abs(project(direct, "pca")), rtol=1e-4, atol=1e-6)
    metadata = pd.DataFrame({k: [c.metadata[k] for c in ok] for k in
                             ("lesions", "age", "scanner")}, index=direct.ids)
    metadata[["lesions", "age"]] = metadata[["lesions", "age"]].astype(float)
    by_hand = confounder_scores(direct, metadata, ["lesions", "age", "scanner"])
    pd.testing.assert_frame_equal(result.confounders, by_hand, rtol=1e-4, atol=1e-6)
    assert set(by_hand["variable"]) == {"lesions", "age", "scanner=B"}
    tables = load_result(tmp_path)
    assert len(tables["latent"]) == N - 1 and "con_score" in tables["confounders"]

    again = run_cohort(job, cases, tmp_path, scheduler=client)
    assert (again.ran, again.skipped) == (1, N - 1)  # only the broken case is retried
    np.testing.assert_allclose(load_embeddings(tmp_path).vectors, stored.vectors)


def test_missing_confounder_columns_are_refused_before_any_case(cohort, tmp_path):
    cases = read_cases(cohort, ("image",))
    job = EmbeddingJob(params={"device": "cpu"}, confounders=["age", "sex"])
    with pytest.raises(XaimedError, match=r"no column\(s\) \['sex'\].*lesions"):
        run_cohort(job, cases, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / "cases.csv").exists()
    with pytest.raises(XaimedError, match="unknown projection"):
        run_cohort(EmbeddingJob(projection="tsne"), cases, tmp_path / "out2", workers=1)


def test_case_metadata_reads_numbers_as_numbers(cohort):
    cases = read_cases(cohort, ("image",))
    table = case_metadata(cases, ["age", "scanner"])
    assert table.index.name == "case_id" and list(table.index) == [c.case_id for c in cases]
    assert pd.api.types.is_float_dtype(table["age"])
    assert list(table["scanner"]) == [c.metadata["scanner"] for c in cases]
    assert set(table["scanner"]) <= {"A", "B"}
    assert "image" not in case_metadata(cases).columns  # the input files are not metadata


def test_embed_command_writes_the_latent_tables(client, cohort, tmp_path):
    code = main(["embed", "--cohort", str(cohort), "--out", str(tmp_path), "--device", "cpu",
                 "--confounders", "lesions", "--scheduler", client.scheduler.address])
    assert code == 1  # case009 failed, and the exit code says so
    assert (tmp_path / "latent.csv").is_file() and (tmp_path / "confounders.csv").is_file()
    assert len(load_embeddings(tmp_path / "embeddings.npz").ids) == N - 1
    assert main(["embed", "--cohort", str(cohort), "--out", str(tmp_path / "x"),
                 "--confounders", "height", "--workers", "1"]) == 2
