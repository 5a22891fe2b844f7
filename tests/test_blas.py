"""core/blas.py: while any shared_cores block is open (in any thread) each OpenBLAS pool has
half the cores; the sizes come back when the last block closes."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from pix2vertex_addon.core import blas


def _sizes() -> list[int]:
    return [int(get()) for _, get in blas.openblas_pools()]


def test_pools_are_halved_while_blocks_overlap_and_restored_after_the_last():
    pools = blas.openblas_pools()
    if not pools:
        pytest.skip("no OpenBLAS found beside numpy or scipy (another BLAS)")
    share = max(1, (os.cpu_count() or 2) // 2)
    for set_, _ in pools:  # a known start: every core
        set_(os.cpu_count() or 2)
    before = _sizes()
    inside_other: list[list[int]] = []
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with blas.shared_cores():
            entered.set()
            release.wait(10)
            inside_other.append(_sizes())

    t = threading.Thread(target=other)
    with blas.shared_cores():
        assert _sizes() == [min(b, share) for b in before]
        t.start()
        assert entered.wait(10)
        np.linalg.solve(np.eye(4)[None] * 2.0, np.ones((1, 4, 1)))  # BLAS still works inside
    assert _sizes() == [min(b, share) for b in before], "another thread's block is still open"
    release.set()
    t.join(10)
    assert inside_other == [[min(b, share) for b in before]]
    assert _sizes() == before


def test_a_failing_block_restores_the_pools():
    if not blas.openblas_pools():
        pytest.skip("no OpenBLAS found beside numpy or scipy")
    before = _sizes()
    with pytest.raises(RuntimeError), blas.shared_cores():
        raise RuntimeError("job failed")
    assert _sizes() == before
