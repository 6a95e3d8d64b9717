"""Fixtures the whole test suite shares."""

import tracemalloc

import pytest


@pytest.fixture
def traced_peak():
    """``peak(job)``: the traced peak allocation (bytes; numpy reports its buffers to
    tracemalloc) of a second call of ``job``, the first one warming caches and imports."""

    def peak(job):
        job()
        tracemalloc.start()
        try:
            job()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return peak
