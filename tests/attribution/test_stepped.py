"""Progress and cancel inside single Captum calls (Shapley sampling) and per batch of VarGrad's
noisy copies."""

import numpy as np
import pytest
import torch

from napari_xaimed._core.progress import Progress, run_steps
from napari_xaimed._core.stepped import stepped
from napari_xaimed.attribution import attribute, attribute_steps


class Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("method,params,total", [
    ("vargrad", {"samples": 8}, 8),
    ("shapley", {"supervoxels": 8, "samples": 2}, None),
])
def test_progress_per_batch_and_the_same_map(tiny, method, params, total):
    # smooth structure, so SLIC finds several supervoxels
    volume = np.indices((12, 14, 16)).sum(axis=0).astype(np.float32)
    volume += np.random.default_rng(0).random(volume.shape).astype(np.float32)
    steps = list(attribute_steps(tiny, volume, method, target=1, batch_size=2, seed=3,
                                 **params))
    # VarGrad steps its own loop over noisy copies (noise from the job's generator), Shapley
    # sampling steps inside Captum's call: "samples" or "volumes" done
    counts = [(p.done, p.total) for p in steps
              if "volumes" in p.message or "samples" in p.message]
    assert len(counts) >= 4  # one report per batch of 2, not one per method
    assert counts[-1][0] == counts[-1][1]  # the count reaches the total exactly
    if total is not None:
        assert counts[-1][1] == total
    assert [d for d, _ in counts] == sorted(d for d, _ in counts)
    stepped_map = run_steps(attribute_steps(tiny, volume, method, target=1, batch_size=2,
                                            seed=3, **params)).map
    # the stepped call is Captum's own: the same map as a run with one big batch
    whole = attribute(tiny, volume, method, target=1, batch_size=64, seed=3, **params).map
    np.testing.assert_allclose(stepped_map, whole, rtol=1e-4, atol=1e-6)


def test_cancel_stops_between_batches_and_leaves_grad_mode_alone(tiny_net, volume):
    torch.manual_seed(0)
    model = Counting(tiny_net().eval())
    steps = attribute_steps(model, volume, "shapley", target=1, batch_size=1, supervoxels=8,
                            samples=4)
    for step in steps:
        if "volumes" in step.message and step.done == 3:
            break
    assert torch.is_grad_enabled()  # Shapley's no_grad stays inside the library call
    calls = model.calls
    steps.close()  # a cancel
    assert model.calls == calls  # nothing ran after the cancel


def test_stepped_returns_the_call_result_and_counts_volumes():
    seen = []

    def call(forward):
        return sum(float(forward(torch.ones(n, 1)).sum()) for n in (2, 3))

    gen = stepped(call, lambda b: b * 2, total=5, label="demo")
    while True:
        try:
            seen.append(next(gen).done)
        except StopIteration as stop:
            result = stop.value
            break
    assert seen == [2, 5] and result == 10.0


def test_stepped_reports_through_its_callback_and_at_most_once_per_interval():
    def call(forward):
        return sum(float(forward(torch.ones(n, 1)).sum()) for n in (1, 2, 3))

    def messages(**kwargs):
        gen = stepped(call, lambda b: b, total=5, label="demo", **kwargs)
        return [(p.done, p.total, p.message) for p in gen]

    # the count is clamped to the total; the callback makes the progress
    assert messages(report=lambda done: Progress(10 + done, 20, f"w{done}")) == [
        (11, 20, "w1"), (13, 20, "w3"), (15, 20, "w5")]
    # a long interval: the first batch hands over, the quick ones after it run on
    assert messages(interval_s=60.0) == [(1, 5, "demo: 1 of 5 volumes")]


def test_stepped_cancel_unwinds_the_call_in_its_own_thread():
    """Closing the generator throws into the call at its last batch: its cleanup runs (in
    the closing thread, which must be the one that ran it), and grad mode is the caller's."""
    events = []

    def call(forward):
        try:
            with torch.no_grad():
                for _ in range(4):
                    forward(torch.ones(1, 1))
        finally:
            events.append("unwound")

    gen = stepped(call, lambda b: b, total=4, label="demo")
    assert next(gen).done == 1
    assert torch.is_grad_enabled()  # the call's no_grad stays inside it
    gen.close()
    assert events == ["unwound"] and torch.is_grad_enabled()
