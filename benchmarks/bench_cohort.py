"""Cohort throughput: cases per minute of the Dask cohort run with 1 and 2 local workers against a
plain sequential loop over the same cases (issue 9).

    python benchmarks/bench_cohort.py [--cases 24] [--size 112] [--kind evaluation|attribution]
                                      [--voronoi] [--repeats 1]

The sequential loop is what a script without the cohort mode does: for each case, read the
files, evaluate (or explain) it and save its heatmaps, then write the table. The Dask runs do
the same work plus hashing the inputs, writing per-case records and the summary. The cluster is
started, and its workers' imports warmed, before the clock starts (the start-up time is printed
on its own), as the loop's process is warmed by one case before its clock starts. Each run
writes into a fresh folder, so nothing is skipped. With ``--repeats N`` each run is made N
times (into fresh folders): the rates come from the best, with the range beside them.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd
from _timing import Timing, ratio

from napari_xaimed.cohort import AttributionJob, EvaluationJob, read_cases, run_cohort
from napari_xaimed.cohort.sample import write_sample_cohort

PARTS = {"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}


def sequential(job, cases, out: Path) -> float:
    start = time.perf_counter()
    rows = []
    for case in cases:
        outcome = job.run(case)
        rows += outcome.rows
        for encoded in outcome.outputs:  # a script saves its heatmaps too
            folder = out / encoded.folder
            folder.mkdir(parents=True, exist_ok=True)
            for name, payload in encoded.files.items():
                (folder / name).write_bytes(payload)
    pd.DataFrame(rows).to_csv(out / "cases.csv")
    return time.perf_counter() - start


def on_cluster(job, cases, out: Path, workers: int) -> tuple[float, float]:
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        started = time.perf_counter() - start
        # warm what a long run pays once: imports and caches on the workers and in the client
        client.run(job.run, cases[0])
        run_cohort(job, cases[:1], out.with_name(out.name + "-warm"), scheduler=client)
        begin = time.perf_counter()
        result = run_cohort(job, cases, out, scheduler=client)
        seconds = time.perf_counter() - begin
    assert result.failed == 0, result.cases[result.cases["status"] != "ok"]
    return seconds, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--kind", choices=["evaluation", "attribution"], default="evaluation")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument("--voronoi", action="store_true",
                        help="evaluation: with Voronoi regions (a heavier case)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = write_sample_cohort(tmp / "in", args.cases, kind=args.kind,
                                  shape=(args.size,) * 3, seed=0)
        if args.kind == "evaluation":
            job = EvaluationJob({"parts": PARTS, "voronoi": args.voronoi})
        else:
            job = AttributionJob(methods=["saliency", "gradcam"], params={"device": "cpu"})
            job.check()
        cases = read_cases(csv, job.required, job.optional)
        job.run(cases[0])  # warm this process's imports and caches for the loop
        loops = []
        for k in range(args.repeats):
            (tmp / f"loop{k}").mkdir()
            loops.append(sequential(job, cases, tmp / f"loop{k}"))
        loop = Timing(loops)
        rates = {"sequential loop": (loop, None)}
        for workers in (1, 2):
            runs = [on_cluster(job, cases, tmp / f"out{workers}-{k}", workers)
                    for k in range(args.repeats)]
            rates[f"dask, {workers} worker{'s' * (workers > 1)}"] = (
                Timing([r[0] for r in runs]), min(r[1] for r in runs))
    print(f"{args.kind}{' + voronoi' * args.voronoi}: {args.cases} cases of {args.size}^3, "
          f"best of {args.repeats} (range: every run)")
    print("| run | seconds | range (s) | cases/min | vs loop | cluster start (s) |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, started) in rates.items():
        print(f"| {name} | {seconds.best:.2f} | {seconds.spread(2)} | "
              f"{args.cases / seconds.best * 60:.1f} | {ratio(loop, seconds)} | "
              f"{'' if started is None else f'{started:.1f}'} |")


if __name__ == "__main__":
    main()
