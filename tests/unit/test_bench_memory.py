"""`bench.memory`: a process tree's resident memory counts shared pages (Ray's object store, read by many
processes) once, where summing every process's RSS counted them once per process that touched them."""

import multiprocessing
import os
import time
from multiprocessing import shared_memory

import numpy as np
import psutil
import pytest

from bench.memory import MB, PeakMemory, _resident, _shared_memory

SIZE = 64 << 20


def _touch(name: str, ready, done) -> None:
    block = shared_memory.SharedMemory(name=name)
    assert int(np.frombuffer(block.buf, dtype=np.uint8)[::4096].sum()) == SIZE // 4096  # every page read
    ready.set()
    done.wait(30)
    block.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssShmem from /proc")
def test_shared_pages_count_once_in_a_tree():
    block = shared_memory.SharedMemory(create=True, size=SIZE)
    np.frombuffer(block.buf, dtype=np.uint8)[:] = 1  # resident in this process
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    child = context.Process(target=_touch, args=(block.name, ready, done))
    child.start()
    try:
        assert ready.wait(60)
        me = psutil.Process()
        assert _shared_memory(os.getpid()) >= SIZE and _shared_memory(child.pid) >= SIZE
        summed = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
        once = _resident(me, tree=True)
        assert summed - once >= SIZE * 0.9  # the second copy of the shared pages is not counted
        assert once >= SIZE + me.memory_info().rss - _shared_memory(os.getpid())  # the first one is
        assert abs(_resident(me, tree=False) - me.memory_info().rss) < 1 << 20  # one process: its RSS
    finally:
        done.set()
        child.join(30)
        block.close()
        block.unlink()


def test_the_peak_is_the_most_held_while_the_block_ran_above_what_was_held_before():
    with PeakMemory(tree=False, interval_s=0.02) as peak:
        held = np.ones(SIZE // 8)  # 64 MiB, every page touched
        time.sleep(0.2)  # sampled while held
        del held
    assert SIZE / MB * 0.9 <= peak.increase_mb < SIZE / MB * 1.5
    assert peak.peak_mb * MB >= peak.baseline + SIZE * 0.9
