"""A seed gives the same map whatever runs beside it: two seeded jobs interleaved, in one thread
or in two, each give Captum's map for their own seed (the global generators seeded as a user
would seed them for a lone Captum call)."""

import threading

import captum.attr as ca
import numpy as np
import pytest
import torch
from _nets import DropNet

from napari_xaimed.attribution import attribute, attribute_steps
from napari_xaimed.attribution.methods import supervoxels
from napari_xaimed.explanations.ensembles import DropoutKept

TARGET = 2
SEEDS = (0, 1)


def _spread(x):
    return float(x.max() - x.min())


def captum_map(method, model, volume, seed, samples, batch):
    """Captum called directly on a lone run, with the global generators seeded."""
    x = torch.from_numpy(volume)[None, None]
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - Captum's GradientSHAP draws from numpy's global RNG
    if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        kwargs = {} if method == "vargrad" else {"abs": method == "smoothgrad"}
        out = ca.NoiseTunnel(ca.Saliency(model)).attribute(
            xg, nt_type=method, nt_samples=samples, nt_samples_batch_size=batch,
            stdevs=0.1 * _spread(x), target=TARGET, **kwargs)
    elif method == "gradient_shap":
        out = ca.GradientShap(model).attribute(xg, baselines=torch.zeros_like(x),
                                               n_samples=samples, stdevs=0.1 * _spread(x),
                                               target=TARGET)
    elif method == "shapley":
        mask = torch.from_numpy(supervoxels(volume, 6))[None, None]
        assert int(mask.max()) >= 3
        with torch.no_grad():
            out = ca.ShapleyValueSampling(model).attribute(
                x, baselines=0.0, target=TARGET, feature_mask=mask, n_samples=samples,
                perturbations_per_eval=batch)
    elif method == "integrated_gradients":  # on a model whose dropout draws in every pass
        out = ca.IntegratedGradients(model).attribute(
            xg, baselines=torch.zeros_like(x), target=TARGET, n_steps=samples,
            internal_batch_size=batch)
    else:
        raise AssertionError(method)
    return out[0, 0].detach().numpy()


def blocks(volume):
    """Eight blocks of different brightness (and the volume as faint noise): SLIC finds
    several supervoxels, so Shapley sampling's permutations matter."""
    z, y, x = np.indices(volume.shape)
    return ((z // 6) * 0.5 + (y // 7) * 0.3 + (x // 8) * 0.15 + 0.05 * volume).astype(
        np.float32)


def params(method, samples):
    if method == "shapley":
        return {"supervoxels": 6, "samples": samples}
    if method == "integrated_gradients":
        return {"steps": samples}
    return {"samples": samples}


def interleaved_in_one_thread(jobs):
    """Advance the step generators one step each in turn until all have returned."""
    results, active = {}, dict(jobs)
    while active:
        for key, steps in list(active.items()):
            try:
                next(steps)
            except StopIteration as stop:
                results[key] = stop.value
                del active[key]
    return results


def interleaved_in_threads(jobs):
    """Each job in its own thread, the threads in lockstep: a barrier after every step."""
    barrier = threading.Barrier(len(jobs), timeout=60)
    results, errors = {}, []

    def run(key, steps):
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as stop:
                    results[key] = stop.value
                    return
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass  # the other job has finished: go on alone
        except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
            errors.append(exc)
        finally:
            barrier.abort()

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("method", ["smoothgrad", "smoothgrad_sq", "vargrad",
                                    "gradient_shap", "shapley"])
def test_interleaved_seeded_jobs_in_one_thread_give_each_seeds_captum_map(tiny, volume,
                                                                          method):
    samples, batch = 6, 1 if method != "shapley" else 2
    if method == "shapley":
        volume = blocks(volume)
    before = torch.get_rng_state()
    jobs = {seed: attribute_steps(tiny, volume, method, target=TARGET, seed=seed,
                                  batch_size=batch, device="cpu", **params(method, samples))
            for seed in SEEDS}
    results = interleaved_in_one_thread(jobs)
    after = torch.get_rng_state()
    for seed in SEEDS:
        expected = captum_map(method, tiny, volume, seed, samples, batch)
        np.testing.assert_allclose(results[seed].map, expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())
        assert results[seed].params["seed"] == seed
    assert not np.allclose(results[0].map, results[1].map)  # the seeds do draw differently
    assert torch.equal(after, before)  # and the caller's own generator is where it was


def test_two_seeded_smoothgrad_jobs_in_two_threads_each_give_their_seeds_map(tiny, volume):
    """The reported case: two SmoothGrad jobs at once moved each other's map by a quarter of
    its maximum while the provenance still named its seed."""
    samples = 8
    jobs = {seed: attribute_steps(tiny, volume, "smoothgrad", target=TARGET, seed=seed,
                                  samples=samples, batch_size=1, device="cpu")
            for seed in SEEDS}
    results = interleaved_in_threads(jobs)
    for seed in SEEDS:
        expected = captum_map("smoothgrad", tiny, volume, seed, samples, 1)
        np.testing.assert_allclose(results[seed].map, expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("where", ["one thread", "two threads"])
def test_a_model_that_draws_dropout_masks_gives_each_seeds_map_beside_another_job(volume,
                                                                                 where):
    torch.manual_seed(0)
    model = DropoutKept(DropNet().eval())
    steps = 6
    jobs = {seed: attribute_steps(model, volume, "integrated_gradients", target=TARGET,
                                  seed=seed, steps=steps, batch_size=1, device="cpu")
            for seed in SEEDS}
    run = interleaved_in_one_thread if where == "one thread" else interleaved_in_threads
    results = run(jobs)
    for seed in SEEDS:
        expected = captum_map("integrated_gradients", model, volume, seed, steps, 1)
        np.testing.assert_allclose(results[seed].map, expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())
    assert not np.allclose(results[0].map, results[1].map)


def test_a_job_waiting_for_another_threads_draws_can_be_cancelled():
    """While another thread's job is inside a step with the global generators, a job waits by
    yielding progress (a chance to cancel) instead of blocking its worker."""
    from napari_xaimed._core.progress import Progress
    from napari_xaimed._core.rng import seeded, seeded_call

    inside, release = threading.Event(), threading.Event()

    def other_job():
        with seeded(5):  # e.g. TCAV, whose scikit-learn draws from numpy's global generator
            inside.set()
            release.wait(30)

    ran = []
    holder = threading.Thread(target=other_job)
    holder.start()
    try:
        assert inside.wait(30)
        steps = seeded_call(lambda: ran.append(torch.rand(1)), 0)
        waiting = next(steps)
        assert isinstance(waiting, Progress) and "waiting" in waiting.message
        steps.close()  # a cancel while waiting
    finally:
        release.set()
        holder.join(30)
    assert ran == []  # the cancelled job never ran
    steps = seeded_call(lambda: torch.rand(3), 0)
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        drawn = stop.value
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.rand(3))  # once free, it draws its seed's numbers


def test_a_job_whose_model_draws_nothing_runs_beside_a_job_holding_the_generators(tiny, volume):
    """The lock serialises only jobs that draw from the process-wide generators: a saliency
    map of a model in evaluation mode is made while another job holds them, never waiting."""
    from napari_xaimed._core.progress import Progress
    from napari_xaimed._core.rng import seeded

    inside, release = threading.Event(), threading.Event()

    def other_job():
        with seeded(5):  # e.g. TCAV of a model with dropout kept on
            inside.set()
            release.wait(60)

    holder = threading.Thread(target=other_job)
    holder.start()
    try:
        assert inside.wait(30)
        steps = attribute_steps(tiny, volume, "saliency", target=TARGET, seed=0, device="cpu")
        messages = []
        try:
            while True:
                item = next(steps)
                if isinstance(item, Progress):
                    messages.append(item.message)
                assert len(messages) < 1000, messages[-3:]  # waiting for the lock: never ends
        except StopIteration as stop:
            result = stop.value
    finally:
        release.set()
        holder.join(30)
    assert not any("waiting" in m for m in messages), messages
    alone = attribute(tiny, volume, "saliency", target=TARGET, seed=0, device="cpu")
    np.testing.assert_array_equal(result.map, alone.map)
