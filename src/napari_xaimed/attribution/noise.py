"""The noise methods (SmoothGrad, SmoothGrad-squared, VarGrad, GradientSHAP), one batch of
noisy copies per step, their random numbers drawn from generators of the call.

Captum draws them from the process-wide generators (``torch.normal``, ``np.random``), which
every other job in the process shares: two seeded jobs at once moved each other's maps. Here
the same numbers, in Captum's order and shapes, come from a ``torch.Generator`` and a
``numpy.random.RandomState`` seeded with the job's seed, so a lone run gives Captum's map for
that seed and a concurrent one cannot change it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from napari_xaimed._core.progress import Progress, Steps


def noise_tunnel(forward: Callable, x: torch.Tensor, target: int | None, method: str,
                 samples: int, noise: float, batch_size: int, seed: int
                 ) -> Steps[torch.Tensor]:
    """SmoothGrad (mean |gradient|), SmoothGrad-squared (mean squared gradient) or VarGrad
    (variance of |gradient|) over noisy copies, as Captum's ``NoiseTunnel(Saliency)`` with
    ``nt_samples_batch_size=batch_size`` computes them, one batch per step: the same noise
    (``torch.normal`` of each batch's expanded shape, drawn here from a ``torch.Generator``
    seeded with ``seed`` instead of torch's global generator), Captum's per-copy gradients, the
    same sums and the same final division."""
    import captum.attr as ca

    generator = torch.Generator(device=x.device).manual_seed(seed)
    spread = float((x.max() - x.min()).detach()) or 1.0
    saliency = ca.Saliency(forward)
    total = total_sq = None
    for start in range(0, samples, batch_size):
        n = min(batch_size, samples - start)
        with torch.no_grad():
            shape = (n * x.shape[0], *x.shape[1:])
            stdev = torch.tensor(noise * spread, device=x.device).expand(shape)
            noisy = x.detach().repeat_interleave(n, dim=0) + torch.normal(
                0, stdev, generator=generator)
        part = saliency.attribute(noisy.requires_grad_(), target=target,
                                  abs=method != "smoothgrad_sq")
        with torch.no_grad():
            if method != "smoothgrad_sq":
                part_sum = part.sum(dim=0, keepdim=True)
                total = part_sum if total is None else total + part_sum
            if method != "smoothgrad":
                part_sq = part.pow(2).sum(dim=0, keepdim=True)
                total_sq = part_sq if total_sq is None else total_sq + part_sq
        del part, noisy
        yield Progress(start + n, samples, f"{method}: {start + n} of {samples} samples")
    if method == "smoothgrad":
        return total / samples  # type: ignore[operator]
    if method == "smoothgrad_sq":
        return total_sq / samples  # type: ignore[operator]
    mean = total / samples  # type: ignore[operator]
    return total_sq / samples - mean * mean  # type: ignore[operator]


def gradient_shap(forward: Callable, x: torch.Tensor, target: int | None,
                  baselines: torch.Tensor, samples: int, noise: float, batch_size: int,
                  seed: int) -> Steps[torch.Tensor]:
    """Captum's GradientSHAP, one batch of samples per forward pass, with progress per batch.

    Captum's ``GradientShap`` is one NoiseTunnel call over all samples, with no batch size:
    for each sample it picks a baseline from the distribution ``baselines`` (numpy), adds
    Gaussian noise to the input (torch), draws a mixing coefficient ``alpha ~ U(0, 1)`` (numpy),
    and averages ``(x' - b) * grad f(alpha x' + (1 - alpha) b)`` over the samples, ``x'`` the
    noisy input. The random numbers are drawn here up front, in Captum's order and shapes, so
    the result is Captum's for the same seeds whatever the batch size; the batches then only
    split the gradient passes, which hold the memory. The noise takes ``samples`` input
    volumes; Captum's single call holds several times that. The draws come from generators of
    this call (numpy's ``RandomState(seed)``, a ``torch.Generator`` seeded with ``seed``): the
    numbers Captum draws after ``np.random.seed(seed)`` and ``torch.manual_seed(seed)``, which
    no other job can move.

    Parameters
    ----------
    forward : callable
        The model as Captum sees it.
    x : torch.Tensor
        The input, ``(1, C, z, y, x)``.
    target : int or None
        The class to explain (None for a forward that returns one score per volume).
    baselines : torch.Tensor
        The baseline distribution, ``(k, C, z, y, x)``.
    samples : int
        Samples (gradient passes) in all.
    noise : float
        Standard deviation of the input noise, as a fraction of the input's range.
    batch_size : int
        Samples per forward pass.
    seed : int
        Of the draws.

    Returns
    -------
    torch.Tensor
        The attribution, ``(1, C, z, y, x)``.
    """
    from captum._utils.gradient import compute_gradients

    numbers = np.random.RandomState(seed % 2**32)  # noqa: NPY002 - Captum's legacy generator
    generator = torch.Generator(device=x.device).manual_seed(seed)

    spread = float((x.max() - x.min()).detach()) or 1.0
    with torch.no_grad():
        x = x.detach()
        # NoiseTunnel._expand_partial, then _add_noise_to_input, then InputBaselineXGradient
        picks = numbers.choice(baselines.shape[0], samples).tolist()
        stdev = torch.tensor(noise * spread, device=x.device)
        shape = (samples, *x.shape[1:])
        noise_all = torch.normal(0, stdev.expand(shape), generator=generator)
        alphas = torch.tensor(numbers.uniform(0.0, 1.0, samples), device=x.device,
                              dtype=x.dtype)
    total = None
    for start in range(0, samples, batch_size):
        stop = min(start + batch_size, samples)
        with torch.no_grad():
            noisy = x + noise_all[start:stop]
            base = baselines[picks[start:stop]]
            alpha = alphas[start:stop].view(-1, *([1] * (x.ndim - 1)))
            scaled = alpha * noisy + (1.0 - alpha) * base
        grads = compute_gradients(forward, (scaled.requires_grad_(),), target)[0]
        with torch.no_grad():
            part = ((noisy - base) * grads).sum(dim=0, keepdim=True)
        total = part if total is None else total + part
        del grads, scaled, noisy, base
        yield Progress(stop, samples, f"gradient_shap: {stop} of {samples} samples")
    return total * 1 / samples
