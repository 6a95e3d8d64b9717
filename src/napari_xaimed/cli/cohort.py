"""``napari-xaimed evaluate --cohort``, ``napari-xaimed attribute --cohort`` and
``napari-xaimed embed --cohort``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import XaimedError


def _json_arg(text: str | None, what: str) -> Any:
    """A JSON value given inline or as a path to a .json file."""
    if text is None:
        return None
    source = Path(text)
    if text.lstrip()[:1] not in "{[\"" and source.suffix == ".json":
        if not source.is_file():
            raise XaimedError(f"--{what}: no file {text!r}.")
        text = source.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise XaimedError(f"--{what} is not valid JSON ({exc.msg}): give it inline, e.g. "
                          + ('\'{"lesion": [1, 2]}\'' if what == "classes" else
                             '\'{"tumor": {"thing": [1, 2], "parts": {"core": [2]}}}\'')
                          + ", or as a .json file.") from exc


def _common(parser: argparse.ArgumentParser, columns: str) -> None:
    parser.add_argument("--cohort", required=True, type=Path, metavar="CSV",
                        help=f"case list: a header row with {columns}; relative paths are "
                        "taken from the CSV's folder")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder; rerunning into it skips finished cases")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="an existing Dask scheduler (e.g. tls://host:8786; tcp:// trusts "
                        "everyone on its network); default: a local cluster on 127.0.0.1")
    parser.add_argument("--tls-ca-file", metavar="PEM",
                        help="TLS to the scheduler: the certificate authority's certificate")
    parser.add_argument("--tls-cert", metavar="PEM", help="TLS: this client's certificate")
    parser.add_argument("--tls-key", metavar="PEM",
                        help="TLS: this client's private key (if not in --tls-cert)")
    parser.add_argument("--workers", type=int,
                        help="local cluster: worker processes (default: one per core)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the bootstrap intervals (and of noisy methods)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")


def add_parsers(sub: Any) -> None:
    """Register the ``evaluate``, ``attribute`` and ``embed`` subcommands."""
    from napari_xaimed.cli._common import TRUST_HELP
    from napari_xaimed.evaluation import DEFAULT_METRICS, DISTANCE_METRICS, MATCHINGS
    from napari_xaimed.evaluation.label_modes import LABEL_MODES

    ev = sub.add_parser("evaluate", help="panoptic evaluation of a cohort on Dask")
    _common(ev, "case_id,reference,prediction")
    ev.add_argument("--matching", default="one_to_one", choices=list(MATCHINGS))
    ev.add_argument("--assignment", default="greedy", choices=["greedy", "optimal"])
    ev.add_argument("--threshold", type=float, default=0.5, help="matching threshold (0.5)")
    ev.add_argument("--match-metric", default="iou", choices=["iou", "dice"])
    ev.add_argument("--classes", help="JSON (inline or .json file): {\"name\": [label values]}")
    ev.add_argument("--parts", help="JSON (inline or .json file): part-aware things and parts")
    ev.add_argument("--instance-input", action="store_true", help="labels are instance ids")
    ev.add_argument("--label-mode", choices=list(LABEL_MODES),
                    help="semantic maps with several label values: per_label (default: each "
                    "value its own class, plus the mean over classes), panoptica (components "
                    "of each value, matched across values as one class, as Panoptica) or "
                    "merged (all values one foreground); --classes groups values instead")
    ev.add_argument("--connectivity", type=int, default=26, choices=[6, 18, 26])
    ev.add_argument("--voronoi", action="store_true", help="also Voronoi region metrics")
    ev.add_argument("--nsd-tolerance", type=float, default=1.0, help="NSD tolerance in mm")
    ev.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                    help="distance metrics, comma-separated, from "
                    f"{','.join(DISTANCE_METRICS)} (default: {','.join(DEFAULT_METRICS)})")
    ev.add_argument("--cldice", action="store_true",
                    help="also clDice (centreline Dice), for tubular structures: vessels, "
                    "airways, neurons; meaningless on blob-like lesions, and the slowest metric")

    at = sub.add_parser("attribute", help="attribution maps of a model on a cohort on Dask")
    _common(at, "case_id,image (and optionally mask)")
    at.add_argument("--model", default="bundled",
                    help="TorchScript file, state dict with <name>.json beside it, MONAI bundle "
                    "folder, or bundled (the lesion classifier, default)")
    at.add_argument("--method", action="append", required=True,
                    help="attribution method; repeat or comma-separate for several")
    at.add_argument("--params", help="JSON: the methods' parameters, "
                    "e.g. '{\"integrated_gradients\": {\"steps\": 16}}'")
    at.add_argument("--target", type=int, help="class to explain (default: the predicted one)")
    at.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    at.add_argument("--batch-size", type=int, help="volumes per forward pass")
    at.add_argument("--tolerance-mm", type=float, default=0.0, help="pointing game tolerance")
    at.add_argument("--k", type=float, default=0.01,
                    help="top-k precision: share of voxels (<1) or count (default 0.01)")
    at.add_argument("--trust", action="store_true", help=TRUST_HELP)

    em = sub.add_parser("embed", help="a model's latent space over a cohort on Dask: "
                        "embeddings, projection, confounder scores")
    _common(em, "case_id,image and any metadata columns (age, sex, scanner...)")
    em.add_argument("--model", default="bundled", help="as for attribute")
    em.add_argument("--layer", help="layer to embed at (default: the last spatial feature map)")
    em.add_argument("--target", type=int, help="class of the decision direction (default: the "
                    "class most cases are predicted as)")
    em.add_argument("--confounders", default="",
                    help="metadata columns to score on the latent space, comma-separated")
    em.add_argument("--projection", default="pca", choices=["pca", "umap"])
    em.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    em.add_argument("--trust", action="store_true", help=TRUST_HELP)


def _job(args: argparse.Namespace) -> Any:
    from napari_xaimed.cohort import AttributionJob, EmbeddingJob, EvaluationJob

    if args.command == "embed":
        return EmbeddingJob(model=args.model, layer=args.layer, target=args.target,
                            params={"device": args.device},
                            confounders=[c.strip() for c in args.confounders.split(",")
                                         if c.strip()], projection=args.projection,
                            trust=args.trust)
    if args.command == "evaluate":
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if args.cldice and "cldice" not in metrics:
            metrics.append("cldice")
        return EvaluationJob({
            "matching": args.matching, "assignment": args.assignment,
            "threshold": args.threshold, "match_metric": args.match_metric,
            "classes": _json_arg(args.classes, "classes"), "label_mode": args.label_mode,
            "parts": _json_arg(args.parts, "parts"), "instance_input": args.instance_input,
            "connectivity": args.connectivity, "voronoi": args.voronoi,
            "nsd_tolerance_mm": args.nsd_tolerance, "metrics": metrics})
    methods = [m.strip() for text in args.method for m in text.split(",") if m.strip()]
    method_params = _json_arg(args.params, "params") or {}
    if not isinstance(method_params, dict) or not all(isinstance(v, dict)
                                                      for v in method_params.values()):
        raise XaimedError("--params must map each method to its parameters, e.g. "
                          "'{\"occlusion\": {\"window\": 8}}'.")
    params: dict[str, Any] = {"device": args.device, "seed": args.seed}
    if args.target is not None:
        params["target"] = args.target
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    k = int(args.k) if args.k >= 1 else args.k
    return AttributionJob(model=args.model, methods=methods, params=params,
                          method_params=method_params, tolerance_mm=args.tolerance_mm, k=k,
                          trust=args.trust)


def _security(args: argparse.Namespace) -> Any:
    """A ``distributed.Security`` from ``--tls-*``, or None (Dask's configuration)."""
    if not (args.tls_ca_file or args.tls_cert or args.tls_key):
        return None
    if not (args.tls_ca_file and args.tls_cert):
        raise XaimedError("TLS needs --tls-ca-file and --tls-cert (and --tls-key unless the key "
                          "is in the certificate file).")
    from napari_xaimed.cohort import tls_security

    return tls_security(args.tls_ca_file, args.tls_cert, args.tls_key)


def run_cohort_command(args: argparse.Namespace) -> int:
    """Run a cohort; exit 0 when every case succeeded, 1 when some failed (see the table)."""
    from napari_xaimed.cohort import read_cases, run_cohort

    job = _job(args)
    cases = read_cases(args.cohort, job.required, job.optional)
    shown = {"done": -1}

    def report(step: Any) -> None:
        if step.done != shown["done"]:
            shown["done"] = step.done
            print(f"[{step.done}/{step.total}] {step.message}", file=sys.stderr, flush=True)

    result = run_cohort(job, cases, args.out, scheduler=args.scheduler, workers=args.workers,
                        seed=args.seed, resamples=args.resamples, callback=report,
                        security=_security(args))
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 12,
                           "display.float_format", "{:.4g}".format):
        if result.ranking is not None:
            print(result.ranking.to_string(index=False))
        if result.confounders is not None:
            print(result.confounders.to_string(index=False))
        print(result.summary.to_string(index=False))
    if "label_mode" in getattr(result.cases, "columns", ()):
        from napari_xaimed.evaluation.label_modes import describe_label_mode

        for mode in result.cases["label_mode"].dropna().unique():
            print(describe_label_mode({"label_mode": mode}))
    print(f"{len(cases)} cases: {result.ran} run, {result.skipped} already finished, "
          f"{result.failed} failed; tables in {args.out}/ ({result.seconds:.1f} s)")
    return 1 if result.failed else 0
