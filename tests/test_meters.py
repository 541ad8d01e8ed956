import subprocess
import sys
import time

import pytest

from kdlora.meters import LatencyResult, percentile, track_latency


def test_percentile_interpolates_like_numpy():
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 50) == 30.0
    assert percentile(values, 90) == pytest.approx(46.0)
    assert percentile(values[::-1], 0) == 10.0
    assert percentile([7.0], 90) == 7.0


def test_latency_result_summaries():
    result = LatencyResult(batch_ms=[100.0, 300.0, 200.0, 400.0], items=64)
    assert result.total_seconds == pytest.approx(1.0)
    assert result.p50_ms == 250.0
    assert result.p90_ms == pytest.approx(370.0)
    assert result.mean_ms == 250.0
    assert result.throughput_per_s == pytest.approx(64.0)


def test_latency_timer_times_each_batch():
    with track_latency("cpu") as timer:
        for size in (3, 5):
            with timer.batch(size):
                time.sleep(0.02)
    assert timer.result.items == 8
    assert len(timer.result.batch_ms) == 2
    assert all(19 <= ms < 200 for ms in timer.result.batch_ms)


def test_cpu_memory_tracker_sees_a_peak_that_was_freed():
    # a fresh process, as in the bench: ru_maxrss is a lifetime peak
    code = """
from kdlora.meters import track_memory
with track_memory("cpu") as memory:
    block = bytearray(80 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
print(memory.kind, memory.peak_mb)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "cpu-peak-rss-delta"
    assert 79 <= float(out[1]) <= 100


def test_bookkeeping_left_out_of_the_peak_is_not_counted_but_the_peak_before_it_is():
    """A training run's best-weights copy and checkpoint writing run inside `left_out_of_peak` (Linux: the peak
    RSS restarts after it, through /proc/self/clear_refs)."""
    code = """
from kdlora.meters import left_out_of_peak, track_memory

def touched(mb):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return block

with track_memory("cpu") as memory:
    work = touched(40)
    del work
    with left_out_of_peak(memory):
        bookkeeping = touched(120)
        del bookkeeping
    work = touched(20)
print(memory.peak_mb)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 39 <= float(out) <= 60  # the 40 MB before it, not its 120 MB


def test_energy_is_this_processs_not_the_machines():
    # codecarbon's default (machine) mode counts every process: concurrent runs would each count the others
    import time

    from kdlora.meters import track_energy

    with track_energy() as energy:
        time.sleep(0.5)
    assert energy.scope == "process"  # as codecarbon recorded it
    assert energy.method.startswith("this process: CPU ")
    assert energy.kwh > 0
