"""JobPanel keeps the garbage collector's full passes short while jobs run, and always undoes it."""

import gc

from napari_xaimed._progress import Progress
from napari_xaimed._widgets._job import JobPanel


def _job(seen, fail=False, steps=1):
    for i in range(steps):
        seen.append(gc.get_freeze_count())
        yield Progress(i, steps, "working")
    if fail:
        raise ValueError("broken on purpose")
    return 1


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
            first.start(_job(seen, steps=10**6), lambda result, seconds: None, "long")
            qtbot.waitUntil(lambda: len(seen) > 2, timeout=10000)
            with qtbot.waitSignal(second.finished, timeout=10000):
                second.start(_job([]), lambda result, seconds: None, "short")
            assert gc.get_freeze_count() > 0  # the first job still runs
            first.cancel()
    finally:  # a failure above must not leave a million-step job flooding later tests
        if first.running:
            first.cancel()
            qtbot.waitUntil(lambda: not first.running, timeout=10000)
    assert ended.args[0] == "cancelled"
    assert gc.get_freeze_count() == 0
