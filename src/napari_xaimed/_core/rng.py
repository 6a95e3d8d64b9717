"""Seeded jobs that cannot disturb one another's random numbers.

Our own draws (SmoothGrad's noise, GradientSHAP's baselines and mixing coefficients, Shapley
sampling's permutations) come from generators local to the job (``torch.Generator``,
``numpy.random.RandomState``). What third-party code draws from the process-wide generators
(dropout kept on in a model's forward pass, scikit-learn inside TCAV, a layer's
``reset_parameters``) is run here with the job's own state of those generators:

- :func:`seeded`: a synchronous section, under one lock, with the global generators seeded and
  the caller's state given back afterwards;
- :func:`seeded_call`: the same for one call inside a step generator, which waits for the
  lock by yielding progress (so it can be cancelled meanwhile);
- :func:`isolated_steps`: a step generator whose every step runs under that lock with the
  job's own global-generator state, saved again when the step yields. Two jobs interleaved,
  in two threads or in one, each draw the numbers a lone run with their seed draws; the lock
  is held only while a step runs, never across a yield.

The lock serialises the jobs that hold it, so it is taken only where the process-wide
generators are drawn from (:func:`draws_globally`): a model that draws in its forward pass, or
a method whose third-party code does; other jobs run side by side, untouched.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch

from napari_xaimed._core.progress import Progress, Steps

T = TypeVar("T")

#: Held while code runs that reads or seeds the process-wide generators on a job's behalf.
RNG_LOCK = threading.RLock()
#: While another job's step holds the lock, a waiting job yields this often (so it can be
#: cancelled).
WAIT_S = 0.1


#: Methods whose third-party code draws from the process-wide generators (Captum's KernelShap).
GLOBAL_DRAWING_METHODS = frozenset({"kernel_shap"})


def model_draws(model: Any) -> bool:
    """Whether running ``model`` may draw from the process-wide generators: a module with a
    submodule in training mode (dropout, stochastic depth) or one that turns such layers on in
    its forward pass (``draws_random = True``, e.g. kept-on dropout); a class with
    ``draws_random = False`` (a wrapper that only calls its children) is judged by its
    children. Anything that is not a ``torch.nn.Module`` counts as drawing."""
    if not isinstance(model, torch.nn.Module):
        return True
    return any(_draws(m) for m in model.modules())


def _draws(module: torch.nn.Module) -> bool:
    # ``draws_random`` set on a class says it outright: True for kept-on dropout, False for
    # the plugin's own wrappers (created in training mode, they draw nothing themselves)
    flag = getattr(module, "draws_random", None)
    return module.training if flag is None else bool(flag)


def draws_globally(method: str, model: Any) -> bool:
    """Whether ``method`` on ``model`` draws from the process-wide generators, so that its
    steps must run under :func:`isolated_steps`."""
    return method in GLOBAL_DRAWING_METHODS or model_draws(model)


def _device(device: Any) -> torch.device | None:
    if device is None:
        return None
    device = torch.device(device)
    return device if device.type in ("cuda", "mps") else None


def _capture(device: torch.device | None) -> tuple[Any, ...]:
    """The process-wide generators' states (torch CPU and ``device``, numpy's legacy
    generator, Python's ``random``)."""
    if device is None:
        accelerator = None
    elif device.type == "cuda":
        accelerator = torch.cuda.get_rng_state(device)
    else:
        accelerator = torch.mps.get_rng_state()
    return (torch.get_rng_state(), accelerator, np.random.get_state(),  # noqa: NPY002
            random.getstate())


def _restore(state: tuple[Any, ...], device: torch.device | None) -> None:
    cpu, accelerator, numpy_state, python_state = state
    torch.set_rng_state(cpu)
    if device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(accelerator, device)
    elif device is not None:
        torch.mps.set_rng_state(accelerator)
    np.random.set_state(numpy_state)  # noqa: NPY002 - the legacy generator others fall back on
    random.setstate(python_state)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    random.seed(seed)


@contextlib.contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """Run the ``with`` block with the process-wide generators seeded with ``seed`` (torch on
    the CPU and ``device``, numpy's legacy generator, Python's ``random``), under
    :data:`RNG_LOCK`; the caller's states are given back afterwards."""
    device = _device(device)
    with RNG_LOCK:
        saved = _capture(device)
        try:
            _seed(seed)
            yield
        finally:
            _restore(saved, device)


def isolated_steps(steps: Steps[T], seed: int, device: Any = None, *,
                   needed: bool = True) -> Steps[T]:
    """Run the step generator ``steps`` with process-wide generators of its own, seeded with
    ``seed``: each step (from one yield to the next) runs under :data:`RNG_LOCK` with the
    job's generator states put in place, which are saved again, and the caller's given back,
    before the step's progress is passed on. Returns what ``steps`` returns; closing this
    generator closes ``steps``. ``needed=False`` (nothing in ``steps`` draws from the
    process-wide generators, see :func:`draws_globally`): ``steps`` runs as it is, no lock."""
    if not needed:
        return (yield from steps)
    device = _device(device)
    own: tuple[Any, ...] | None = None
    last = Progress(0, 1, "waiting for another job")
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            while not RNG_LOCK.acquire(timeout=WAIT_S):  # another thread's job is in a step
                yield Progress(last.done, last.total, f"{last.message} (waiting: another "
                               "seeded job is drawing random numbers)")
            try:
                saved = _capture(device)
                try:
                    if own is None:
                        _seed(seed)
                    else:
                        _restore(own, device)
                    if thrown is not None:
                        error, thrown = thrown, None
                        item = steps.throw(error)
                    else:
                        item = steps.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    own = _capture(device)
                    _restore(saved, device)
            finally:
                RNG_LOCK.release()
            if isinstance(item, Progress):
                last = item
            try:
                sent = yield item
            except GeneratorExit:
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the job, as yield from does
                thrown = exc
    finally:
        steps.close()


def seeded_call(func: Callable[[], T], seed: int, device: Any = None, *,
                needed: bool = True) -> Steps[T]:
    """``func()`` with the process-wide generators seeded with ``seed``, as a step generator
    (it yields only while another thread's job holds :data:`RNG_LOCK`); ``needed=False``:
    just ``func()``, as for :func:`isolated_steps`."""
    def call() -> Steps[T]:
        return func()
        yield  # a generator: isolated_steps runs it as one step

    return (yield from isolated_steps(call(), seed, device, needed=needed))
