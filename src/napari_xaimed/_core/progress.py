"""Long computations as generators of progress, so the same code serves scripts and widgets.

A core function that takes a while is written as a generator that yields :class:`Progress` and
returns its result. Scripts call the plain function, which drives the generator with
:func:`run_steps`; widgets hand the generator to a napari worker, which shows each step in a
progress bar and can stop between steps (cancel).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps finished; ``message`` says what runs next."""

    done: int
    total: int
    message: str = ""


Steps = Generator[Progress, None, T]


def run_steps(steps: Steps[T], callback: Callable[[Progress], None] | None = None) -> T:
    """Drive a step generator to its end and return its result.

    Parameters
    ----------
    steps : generator
        Yields :class:`Progress`, returns the result.
    callback : callable, optional
        Called with each :class:`Progress` (e.g. to print or log it).
    """
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(step)


def within(steps: Steps[T], part: int, parts: int, label: str = "") -> Steps[T]:
    """Run ``steps`` as part ``part`` (from 0) of ``parts`` equal parts of a bigger job: its
    progress is rescaled onto the whole, its messages prefixed with ``label``. Closing this
    generator (a cancel) closes ``steps`` too."""
    scale = 1000
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            share = min(1.0, step.done / step.total) if step.total else 0.0
            yield Progress(part * scale + int(share * scale), parts * scale,
                           f"{label}{step.message}")
    finally:
        steps.close()


def in_background(func: Callable[[], T], message: str, poll_s: float = 0.05) -> Steps[T]:
    """Run ``func()`` in a helper thread, yielding progress until it returns its result.

    For one long call into C code that releases the GIL (scipy's distance transform): a
    generator cannot be stopped inside such a call, but it can yield while a helper thread
    makes it, so a cancel acts within ``poll_s``. A cancelled call runs to its end in the
    background and its result is dropped.

    Parameters
    ----------
    func : callable
        Takes no arguments; its result is returned, its exception raised here.
    message : str
        The progress message while it runs.
    poll_s : float
        Seconds between yields.
    """
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=call, name="xaimed-background", daemon=True)
    thread.start()
    thread.join(poll_s)
    while thread.is_alive():
        yield Progress(0, 1, message)
        thread.join(poll_s)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
