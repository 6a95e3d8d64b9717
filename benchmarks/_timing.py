"""Timing shared by the benchmark scripts (imported from their own folder)."""

import time

import torch


def best(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, in seconds (CUDA work waited for)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)
