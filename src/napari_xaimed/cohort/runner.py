"""Run a job over every case of a cohort on Dask (a local cluster, or the user's own).

Each case is one ``dask.distributed`` task. Tasks of a worker that dies are rescheduled by the
scheduler on another worker, so no case is lost; a case that kills every worker it runs on ends
as a failed row (Dask's ``KilledWorker``). The client writes each case's record the moment it
arrives, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.provenance import _plain
from napari_xaimed.cohort.jobs import CaseOutcome, describe_failure
from napari_xaimed.cohort.store import CohortStore, case_key, write_json_atomic
from napari_xaimed.cohort.summary import (
    attribution_ranking,
    attribution_summary,
    embedding_summary,
    evaluation_summary,
)
from napari_xaimed.io.cases import Case, check_case_ids

TRUTH_METRICS = ("relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "pointing_game",
                 "top_k_precision")
POLL_S = 0.1


@dataclass
class CohortResult:
    """What a cohort run leaves, also written to its output folder.

    Attributes
    ----------
    out : pathlib.Path
    cases : pandas.DataFrame
        Per case (and class, or method): ``case_id``, ``status`` (``ok``/``error``), ``error``,
        ``seconds`` and the metrics.
    instances : pandas.DataFrame or None
        Evaluation: per matched instance. Attribution with masks: per structure of the mask
        and method, the relevance inside and around it (``structures.csv``).
    summary : pandas.DataFrame
        Per group (class or method) and metric: n, mean, median and bootstrap 95% interval.
    ranking : pandas.DataFrame or None
        Attribution with a mask column and two or more methods: the methods ranked.
    ran, skipped, failed : int
        Cases computed in this run, found finished from an earlier run, and failed.
    seconds : float
    latent : pandas.DataFrame or None
        Embedding: per case, its projection coordinates, predicted class and metadata
        (:func:`~napari_xaimed.cohort.embedding.summarise_latent`).
    confounders : pandas.DataFrame or None
        Embedding with confounder columns: their scores on the latent space.
    """

    out: Path
    cases: Any
    instances: Any
    summary: Any
    ranking: Any
    ran: int
    skipped: int
    failed: int
    seconds: float
    latent: Any = None
    confounders: Any = None


LOOPBACK = "127.0.0.1"


def tls_security(ca_file: str | Path, cert: str | Path, key: str | Path | None = None) -> Any:
    """A ``distributed.Security`` that requires TLS, from PEM files (the CLI's ``--tls-*``).

    Parameters
    ----------
    ca_file : str or pathlib.Path
        The certificate authority that signed the scheduler's and workers' certificates.
    cert, key : str or pathlib.Path
        This client's certificate and private key (``key`` may be omitted when the key is
        appended to the certificate file).

    Returns
    -------
    distributed.Security
    """
    from distributed import Security

    files = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    for flag, path in files.items():
        if path is not None and not Path(path).is_file():
            raise XaimedError(f"{flag}: no file {str(path)!r}; give the PEM file's path.")
    return Security(require_encryption=True, tls_ca_file=str(ca_file),
                    tls_client_cert=str(cert), tls_client_key=str(key) if key else None)


@contextlib.contextmanager
def cohort_client(scheduler: Any = None, workers: int | None = None, *,
                  security: Any = None) -> Iterator[Any]:
    """A ``distributed.Client``: the given one, one connected to ``scheduler`` (an address
    such as ``tls://10.0.0.5:8786``), or one of a new local cluster with ``workers`` processes
    (default: one per core) of one thread each. Clients and clusters made here are closed on
    exit.

    A local cluster's scheduler, workers and dashboard listen on 127.0.0.1 only. A remote
    scheduler is reached as its address says: over ``tcp://`` anyone on that network can submit
    work to it, so use ``tls://`` with ``security`` (a ``distributed.Security``, e.g. from
    :func:`tls_security`; default: Dask's configuration) unless the network is trusted.
    """
    from distributed import Client, LocalCluster, Security

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler:
        if str(scheduler).startswith("tls://") and not (
                security or Security()).get_connection_args("client").get("ssl_context"):
            raise XaimedError(f"the Dask scheduler at {scheduler!r} speaks TLS but no "
                              "credentials were given: pass security= (tls_security(...)) or "
                              "--tls-ca-file/--tls-cert/--tls-key, or set them in Dask's "
                              "configuration (distributed.comm.tls).")
        try:
            client = Client(scheduler, timeout="20s", security=security)
        except (OSError, TimeoutError) as exc:
            raise XaimedError(f"could not reach the Dask scheduler at {scheduler!r} ({exc}): "
                              "check the address, that the scheduler runs and, for tls://, "
                              "the certificates.") from exc
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or os.cpu_count() or 1)
    if n < 1:
        raise XaimedError(f"workers must be at least 1, got {workers}.")
    # distributed binds an address without a host (":0", its default ":8787") to every interface
    dashboard = f"{LOOPBACK}:0" if importlib.util.find_spec("bokeh") else None
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host=LOOPBACK,
                           dashboard_address=dashboard, security=security,
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _rows(case: Case, record: dict[str, Any]) -> list[dict[str, Any]]:
    head = {"case_id": case.case_id, "status": record.get("status", "error"),
            "error": record.get("error", ""), "seconds": record.get("seconds")}
    return [{**head, **row} for row in record.get("rows") or [{}]]


def _instances(case: Case, record: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"case_id": case.case_id, **row} for row in record.get("instances", [])]


def _write_tables(store: CohortStore, name: str, frame: Any) -> None:
    frame.to_csv(store.out / f"{name}.csv", index=False)
    frame.to_parquet(store.out / f"{name}.parquet", index=False)


def run_cohort_steps(job: Any, cases: list[Case], out: str | Path, *, scheduler: Any = None,
                     workers: int | None = None, seed: int = 0, resamples: int = 2000,
                     security: Any = None) -> Steps[CohortResult]:
    """Generator form of :func:`run_cohort` (yields progress, returns the result); closing it
    cancels the cases not yet finished and keeps those that are."""
    import pandas as pd

    start = time.perf_counter()
    check_case_ids(cases)  # cases built in a script, not read by read_cases
    job.check()
    if hasattr(job, "check_cases"):
        job.check_cases(cases)
    store = CohortStore(out)
    total = len(cases)
    yield Progress(0, total, "hashing the input files")
    keys: dict[str, str] = {}
    todo: list[Case] = []
    failed_early = 0
    for case in cases:
        try:
            hashes = {col: store.hashes.sha256(path) for col, path in case.files.items()}
        except OSError as exc:
            store.write(case, {"key": "", "status": "error", "seconds": 0.0,
                               "error": f"cannot read an input file: {exc}"})
            failed_early += 1
            continue
        keys[case.case_id] = case_key(job.kind, hashes, job.key_params())
        if not store.finished(case, keys[case.case_id]):
            todo.append(case)
    store.hashes.save()
    skipped = total - len(todo) - failed_early
    write_json_atomic(store.out / "run.json", {
        "kind": job.kind, "params": job.key_params(), "cases": total,
        "scheduler": str(scheduler) if scheduler else f"local ({workers or os.cpu_count()})",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    done = total - len(todo)
    if todo:
        from distributed import wait

        yield Progress(done, total, f"starting Dask ({skipped} cases already finished)")
        with cohort_client(scheduler, workers, security=security) as client:
            run_id = uuid.uuid4().hex[:8]
            futures = {client.submit(job.run, case, key=f"{job.kind}-{case.stem}-{run_id}",
                                     pure=False, retries=1): case for case in todo}
            pending = set(futures)
            try:
                message = f"{len(todo)} cases on {len(client.scheduler_info()['workers'])} workers"
                while pending:
                    try:
                        finished, _ = wait(list(pending), timeout=POLL_S,
                                           return_when="FIRST_COMPLETED")
                    except TimeoutError:
                        yield Progress(done, total, message)  # a chance to cancel
                        continue
                    for future in finished:
                        pending.discard(future)
                        case = futures[future]
                        outcome = _outcome(future)
                        _store(store, case, keys[case.case_id], outcome)
                        done += 1
                        message = (f"{case.case_id}: {outcome.status} "
                                   f"({outcome.seconds:.1f} s)" + (f": {outcome.error}"
                                                                   if outcome.error else ""))
                        yield Progress(done, total, message)
            finally:
                if pending:  # cancelled (generator closed) or an error of ours
                    client.cancel(list(pending), force=True)
    yield Progress(total, total, "summarising")
    records = {case.case_id: store.record(case) or {"status": "error", "error": "no record"}
               for case in cases}
    failed = sum(r.get("status") != "ok" for r in records.values())
    table = pd.DataFrame([row for case in cases for row in _rows(case, records[case.case_id])])
    _write_tables(store, "cases", table)
    instances = ranking = latent = confounders = None
    if job.kind == "embedding":
        from napari_xaimed.cohort.embedding import summarise_latent

        latent, confounders = summarise_latent(job, cases, records, store.out)
        summary = embedding_summary(table, seed=seed, resamples=resamples)
    elif job.kind == "evaluation":
        instances = pd.DataFrame([row for case in cases
                                  for row in _instances(case, records[case.case_id])])
        if len(instances) == 0:
            instances = pd.DataFrame(columns=["case_id", "class_name", "accepted"])
        _write_tables(store, "instances", instances)
        summary = evaluation_summary(table, instances, seed=seed, resamples=resamples)
    else:
        # with masks: relevance per structure of the mask, per case and method
        instances = pd.DataFrame([row for case in cases
                                  for row in _instances(case, records[case.case_id])])
        if len(instances):
            _write_tables(store, "structures", instances)
        summary = attribution_summary(table, seed=seed, resamples=resamples)
        ranking = attribution_ranking(table, list(TRUTH_METRICS), seed=seed,
                                      resamples=resamples)
        if ranking is not None:
            ranking.to_csv(store.out / "ranking.csv", index=False)
    summary.to_csv(store.out / "summary.csv", index=False)
    return CohortResult(out=store.out, cases=table, instances=instances, summary=summary,
                        ranking=ranking, ran=len(todo) + failed_early, skipped=skipped,
                        failed=failed, seconds=time.perf_counter() - start, latent=latent,
                        confounders=confounders)


def _outcome(future: Any) -> CaseOutcome:
    """The case's outcome, or a failure saying why the task itself did not come back."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return CaseOutcome.failed(
            "every worker that ran this case died (Dask KilledWorker): it most likely needs more "
            "memory than a worker has, or crashed native code; run it alone or with fewer, "
            "larger workers.")
    except Exception as exc:
        return CaseOutcome.failed(describe_failure(exc))


def _store(store: CohortStore, case: Case, key: str, outcome: CaseOutcome) -> None:
    """Write the case's files and its record."""
    outputs: list[str] = []
    if outcome.status == "ok":
        try:
            for encoded in outcome.outputs:
                folder = store.outputs_dir / encoded.folder
                folder.mkdir(parents=True, exist_ok=True)
                for name, payload in encoded.files.items():
                    tmp = folder / f".{name}.tmp"
                    tmp.write_bytes(payload)
                    os.replace(tmp, folder / name)
                    outputs.append(str((folder / name).relative_to(store.out)))
        except OSError as exc:
            outcome = CaseOutcome.failed(f"could not write its output: {exc}", outcome.seconds)
    store.write(case, _plain({
        "key": key, "status": outcome.status, "error": outcome.error,
        "seconds": round(outcome.seconds, 3), "worker": outcome.worker,
        "files": {col: str(path) for col, path in case.files.items()},
        "outputs": outputs, "rows": outcome.rows, "instances": outcome.instances},
        nonfinite_as_null=True))


def run_cohort(job: Any, cases: list[Case], out: str | Path, *, scheduler: Any = None,
               workers: int | None = None, seed: int = 0, resamples: int = 2000,
               callback: Any = None, security: Any = None) -> CohortResult:
    """Run ``job`` over ``cases`` on Dask and write the tables and summary to ``out``.

    Parameters
    ----------
    job : EvaluationJob or AttributionJob
    cases : list of Case
        From :func:`~napari_xaimed.cohort.read_cases`.
    out : str or pathlib.Path
        Output folder; running again into it skips the cases already finished with the same
        inputs and parameters.
    scheduler : str or distributed.Client, optional
        An existing cluster (scheduler address or client). Default: a local cluster, listening
        on 127.0.0.1 only.
    workers : int, optional
        Workers of the local cluster (default: one per core).
    seed, resamples : int
        Of the bootstrap intervals.
    callback : callable, optional
        Called with each :class:`~napari_xaimed._core.progress.Progress`.
    security : distributed.Security, optional
        TLS credentials for a ``tls://`` scheduler (see :func:`tls_security`) or a local cluster
        that must encrypt; default: Dask's configuration.

    Returns
    -------
    CohortResult
    """
    return run_steps(run_cohort_steps(job, cases, out, scheduler=scheduler, workers=workers,
                                      seed=seed, resamples=resamples, security=security),
                     callback)


def load_result(out: str | Path) -> dict[str, Any]:
    """The tables a finished run left in ``out`` (for the viewer and notebooks)."""
    import pandas as pd

    out = Path(out)
    if not (out / "cases.csv").is_file():
        raise XaimedError(f"{str(out)!r} holds no cohort result (no cases.csv): run a cohort "
                          "into it first.")
    names = ("cases", "instances", "summary", "ranking", "latent", "confounders")
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in names
              if (out / f"{name}.csv").is_file()}
    tables["run"] = json.loads((out / "run.json").read_text())
    return tables
