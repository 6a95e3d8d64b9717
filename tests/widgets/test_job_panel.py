"""JobPanel keeps the garbage collector's full passes short while jobs run, and always undoes it."""

import gc
import time

from napari_xaimed._core.progress import Progress
from napari_xaimed.viewer.widgets._job import JobPanel


def _job(seen, fail=False, steps=1):
    for i in range(steps):
        seen.append(gc.get_freeze_count())
        yield Progress(i, steps, "working")
    if fail:
        raise ValueError("broken on purpose")
    return 1


def _endless(seen):
    """A job that ends only when cancelled; each step waits a millisecond without the
    interpreter lock, as a job's C code does (gc.get_freeze_count walks every frozen
    object holding the lock: late in a long test session that starved the other threads)."""
    while True:
        seen.append(len(seen))
        time.sleep(0.001)
        yield Progress(len(seen), len(seen) + 1, "working")


def _fast(steps):
    for i in range(steps):
        yield Progress(i, steps, "working")
    return steps


def test_objects_are_frozen_while_a_job_runs_and_unfrozen_after(qtbot):
    assert gc.get_freeze_count() == 0
    for fail in (False, True):
        panel = JobPanel()
        qtbot.addWidget(panel)
        seen = []
        with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
            panel.start(_job(seen, fail), lambda result, seconds: None, "job")
        assert blocker.args[0] == ("failed" if fail else "done")
        assert seen and seen[0] > 0  # the session's objects were out of the collector's walk
        assert gc.get_freeze_count() == 0  # and back in it once the job ended


def test_two_panels_unfreeze_only_when_both_ended_and_after_cancel(qtbot):
    first, second = JobPanel(), JobPanel()
    qtbot.addWidget(first)
    qtbot.addWidget(second)
    seen = []
    try:
        with qtbot.waitSignal(first.finished, timeout=10000) as ended:
            first.start(_endless(seen), lambda result, seconds: None, "long")
            qtbot.waitUntil(lambda: len(seen) > 2, timeout=10000)
            with qtbot.waitSignal(second.finished, timeout=10000):
                second.start(_job([]), lambda result, seconds: None, "short")
            assert gc.get_freeze_count() > 0  # the first job still runs
            first.cancel()
    finally:  # a failure above must not leave an endless job running in later tests
        if first.running:
            first.cancel()
            qtbot.waitUntil(lambda: not first.running, timeout=10000)
    assert ended.args[0] == "cancelled"
    assert gc.get_freeze_count() == 0


def test_fast_steps_reach_the_gui_thinned_out_and_the_last_one_always(qtbot):
    """A job stepping every few microseconds sends the GUI thread a step at most every
    PROGRESS_INTERVAL_S (each is a queued signal: a flood of them made the viewer lag and held
    up other jobs' signals), and its last step always, so the bar's total is the job's; once
    done it reads 100 % (issue 29 item 7)."""
    panel = JobPanel()
    qtbot.addWidget(panel)
    shown = []
    handle = panel._on_progress
    panel._on_progress = lambda step: (shown.append(step), handle(step))
    steps = 200_000
    with qtbot.waitSignal(panel.finished, timeout=60000) as ended:
        panel.start(_fast(steps), lambda result, seconds: None, "fast")
    assert ended.args[0] == "done"
    assert shown[-1] == Progress(steps - 1, steps, "working")
    assert len(shown) < steps / 100
    assert panel.bar.value() == steps and panel.bar.maximum() == steps


def test_the_bar_is_full_when_a_job_is_done_and_empty_when_it_failed(qtbot):
    """The last step a job reports is the work before it (2 of 3), and a job that reports
    no step leaves the bar busy: done must still read 100 %."""
    for steps, fail in ((3, False), (0, False), (3, True)):
        panel = JobPanel()
        qtbot.addWidget(panel)
        with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
            panel.start(_job([], fail, steps), lambda result, seconds: None, "job")
        bar = panel.bar
        if fail:
            assert blocker.args[0] == "failed" and bar.value() == 0
        else:
            assert blocker.args[0] == "done"
            assert bar.maximum() == max(steps, 1) and bar.value() == bar.maximum()
            assert bar.text() == "100%"
