"""Meters: how memory, latency and energy are measured, for `kdlora bench` and for a training run alike.

Each is a context manager that hands back a small result dataclass (optimum-benchmark calls these "trackers";
here that word is kept for TensorBoard/MLflow experiment tracking, `kdlora.train.tracking`).

Memory: on CUDA `torch.cuda.max_memory_allocated` after a reset; on CPU the process's peak resident set size
(Linux VmHWM, reset when the meter starts; `ru_maxrss` elsewhere) less its RSS when the meter started;
bookkeeping inside the block (`left_out_of_peak`: a training run's best-weights copy, its checkpoints) is not
counted. Memory freed by one configuration may stay in the allocator and hide the next one's growth, which is why
every configuration runs in its own worker process.
Latency: wall time per batch (CUDA events on a GPU), reported as total, p50, p90 and throughput.
Energy: codecarbon's offline tracker (extra `energy`; no network) in its process mode: kWh and g CO2-eq of the block
for this process and its children, not the whole machine (other runs on it are not counted). Without RAPL it
estimates CPU power as the CPU's TDP x this process's share of CPU time, and RAM power from this process's memory;
RAPL (CPU) and NVML (GPU) read whole devices, other processes included. `method` says which held.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from kdlora.errors import UserError

MB = 1024 * 1024


@dataclass
class MemoryResult:
    peak_mb: float | None = None
    """Peak memory of the tracked block, MB (2**20 bytes)."""
    kind: str = ""
    """What the figure is: `cpu-peak-rss-delta` or `cuda-max-memory-allocated`."""
    device: str = "cpu"
    peaks: list = field(default_factory=list)
    """Peaks (bytes) read where bookkeeping began (`left_out_of_peak`); the figure is the largest peak outside it."""


def _reset_peak_rss() -> None:
    """Restart the kernel's peak-RSS count (VmHWM) at the current RSS, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    """The process's peak RSS: VmHWM on Linux (resettable, and not inherited from the parent that forked us,
    which `ru_maxrss` can be), else `ru_maxrss`."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def warm_up_runtime(arch, device: str) -> None:
    """Import the model's code and start PyTorch's kernels, autograd and AdamW on a toy layer, so that the memory
    baseline taken next already holds the libraries: the peak delta is then the configuration's own (the bench's
    workers and a training run both call it before `track_memory`)."""
    import peft  # noqa: F401 - imported for its memory, before the baseline
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    AutoModelForSequenceClassification  # noqa: B018 - the lazy module loads on first use
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(arch.config(tiny=True))]
    cuda = [torch.cuda.current_device()] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):  # the seeded run that follows must not see this draw
        layer = torch.nn.Linear(8, 2).to(device)
        optimizer = torch.optim.AdamW(layer.parameters())
        layer(torch.randn(4, 8, device=device)).softmax(-1).sum().backward()
        optimizer.step()


def restart_peak(device: str = "cpu") -> None:
    """Forget the peak so far inside a `track_memory` block: the figure becomes the larger of what is held now and
    what the rest of the block reaches, still less the block's starting point (e.g. a derived student's teacher,
    loaded only to cut the student from, is not the student's cost)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc's malloc_trim), so a baseline taken next
    is not inflated by memory that a later allocation would reuse unseen."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _peak_rss_bytes()


@contextlib.contextmanager
def left_out_of_peak(memory: MemoryResult) -> Iterator[None]:
    """Bookkeeping inside a `track_memory` block that is not the measured work (copying the best weights aside,
    writing a checkpoint): the peak so far is kept, and what the block allocates and frees again is not counted.
    What it leaves allocated still counts from then on, so keep big copies off the measured memory."""
    memory.peaks.append(_peak_bytes(memory.device))
    try:
        yield
    finally:
        release_freed_memory()
        restart_peak(memory.device)


@contextlib.contextmanager
def track_memory(device: str = "cpu") -> Iterator[MemoryResult]:
    """Measure the peak memory of the block; the yielded result is filled in when the block ends.

    On CPU, use a fresh process: memory a previous block freed to the allocator (not the OS) is reused unseen.
    """
    result = MemoryResult(device=device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result.kind = "cuda-max-memory-allocated"
    else:
        import psutil

        _reset_peak_rss()
        before = psutil.Process().memory_info().rss
        result.kind = "cpu-peak-rss-delta"
    yield result
    result.peak_mb = (max([_peak_bytes(device), *result.peaks]) - before) / MB


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class LatencyResult:
    batch_ms: list[float] = field(default_factory=list)
    """Wall time of every timed batch, ms."""
    items: int = 0
    """Sequences processed in the timed batches."""

    @property
    def total_seconds(self) -> float:
        return sum(self.batch_ms) / 1000

    @property
    def p50_ms(self) -> float:
        return percentile(self.batch_ms, 50)

    @property
    def p90_ms(self) -> float:
        return percentile(self.batch_ms, 90)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.batch_ms)

    @property
    def throughput_per_s(self) -> float:
        return self.items / self.total_seconds


class LatencyTimer:
    """Times one batch at a time: `with timer.batch(size): model(**inputs)`."""

    def __init__(self, device: str):
        self.device = device
        self.result = LatencyResult()
        self._events = []

    @contextlib.contextmanager
    def batch(self, size: int):
        if self.device.startswith("cuda"):
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((start, end))
        else:
            start = time.perf_counter()
            yield
            self.result.batch_ms.append((time.perf_counter() - start) * 1000)
        self.result.items += size

    def finish(self) -> LatencyResult:
        if self._events:
            import torch

            torch.cuda.synchronize()
            self.result.batch_ms.extend(s.elapsed_time(e) for s, e in self._events)
            self._events.clear()
        return self.result


@contextlib.contextmanager
def track_latency(device: str = "cpu") -> Iterator[LatencyTimer]:
    """Yield a `LatencyTimer`; when the block ends its `.result` holds every batch's time."""
    timer = LatencyTimer(device)
    yield timer
    timer.finish()


ENERGY_COUNTRY_ENV = "KDLORA_ENERGY_COUNTRY"
"""Environment variable naming the ISO 3166 alpha-3 country whose grid converts kWh into CO2-eq (default USA)."""


@dataclass
class EnergyResult:
    kwh: float | None = None
    """Energy of the block (CPU, RAM and GPU), kWh: this process's where codecarbon can tell (see `method`)."""
    g_co2eq: float | None = None
    """Emissions of that energy on the country's grid, grams CO2-equivalent."""
    method: str = ""
    """What was measured and how, per device: e.g. `this process: CPU estimated (TDP x its CPU time), RAM estimated
    (its memory)`, or the CPU `measured (intel_rapl): whole package, other processes included`."""
    scope: str = ""
    """What codecarbon says it tracked: `process` (this process and its children) or `machine`."""
    country: str = ""
    """The grid's country (ISO 3166 alpha-3)."""


def require_energy() -> None:
    """UserError (one line) unless codecarbon, the `energy` extra, is installed."""
    if importlib.util.find_spec("codecarbon") is None:
        raise UserError("--track-energy needs the `energy` extra: pip install 'kdlora[energy]'")


@contextlib.contextmanager
def track_energy(enabled: bool = True) -> Iterator[EnergyResult]:
    """Measure the energy and emissions of the block (codecarbon offline); a disabled meter yields an empty
    result and imports nothing."""
    result = EnergyResult()
    if not enabled:
        yield result
        return
    require_energy()
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)  # after the import, which sets its own level

    result.country = os.environ.get(ENERGY_COUNTRY_ENV, "USA")
    # process mode: the default (machine) counts every process on the machine, concurrent runs in each of them
    tracker = OfflineEmissionsTracker(country_iso_code=result.country, output_methods=[], log_level="error",
                                      measure_power_secs=5, tracking_mode="process")
    tracker.start()
    try:
        yield result
    finally:
        kg = tracker.stop()
        data = tracker.final_emissions_data
        result.kwh = float(data.energy_consumed)
        result.g_co2eq = float(kg) * 1000
        result.scope = str(getattr(data, "tracking_mode", "") or "machine")
        modes = {type(h).__name__: getattr(h, "_mode", "") for h in getattr(tracker, "_hardware", [])}
        result.method = energy_method(modes, result.scope)


METERED_CPU = ("intel_rapl", "intel_power_gadget", "windows_emi", "apple_powermetrics")
"""codecarbon's CPU modes that read a power meter: whole packages, whatever the tracking mode."""


def energy_method(modes: dict[str, str], scope: str) -> str:
    """What a codecarbon figure covers, per device, from its hardware modes (`{"CPU": "cpu_load", ...}`)."""
    mine = scope == "process"
    cpu = modes.get("CPU", "")
    if cpu in METERED_CPU:
        parts = [f"CPU measured ({cpu}): whole package, other processes included"]
    elif cpu == "cpu_load" and mine:
        parts = ["CPU estimated (TDP x its CPU time)"]
    else:
        parts = [f"CPU estimated ({cpu or 'TDP'}): whole machine"]
    parts.append("RAM estimated (its memory)" if mine else "RAM estimated (the machine's memory)")
    if "GPU" in modes:
        parts.append("GPU measured (NVML): whole devices, other processes included")
    return ("this process: " if mine else "whole machine: ") + ", ".join(parts)

