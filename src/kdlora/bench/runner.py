"""`run_bench`: every (family, method, rank) of Table II — exact counts in-process, measurements in workers.

Parameter counts are exact and take seconds (meta-device builds), so they cover every rank. Memory and latency do
not depend on the rank beyond a rounding error, so by default they are measured at the first rank only, each
configuration in a fresh worker process (forked from a server that imported the libraries once); `all_ranks`
measures every rank.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kdlora import modeling
from kdlora.bench import evalset, worker
from kdlora.bench.environment import describe_environment, load_average
from kdlora.bench.forms import DEFAULT_FORM
from kdlora.bench.settings import BenchSettings
from kdlora.errors import UserError
from kdlora.families import get_family
from kdlora.methods import get_method

Launcher = Callable[[dict], dict]


@dataclass
class BenchRow:
    """One row of bench.json: a (family, method, rank), its exact counts and, when measured, its figures."""

    family: str
    model: str
    """Hub name of the architecture the method trains."""
    method: str
    rank: int | None
    runtime: str
    """Inference runtime of the measured form (kdlora.bench.forms): pytorch or onnxruntime."""
    precision: str
    quantize: str
    adapter_params: int
    trainable_params: int
    total_params: int
    peak_memory_mb: float | None = None
    """Peak memory of the training step, MB; what it is says `memory_kind` (same names as a train run's)."""
    memory_kind: str | None = None
    """`cpu-peak-rss-delta` or `cuda-max-memory-allocated` (kdlora.meters)."""
    train_step_seconds: float | None = None
    eval_seconds: float | None = None
    """The evaluation set's time, adapters merged."""
    eval_seconds_unmerged: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    throughput_per_s: float | None = None
    size_mb: float | None = None
    """Size of the measured inference form's weights, MB."""
    eval_energy_kwh: float | None = None
    """With track_energy: the merged evaluation's energy (codecarbon), kWh; also per 1,000 predictions, in Wh."""
    eval_g_co2eq: float | None = None
    eval_wh_per_1000: float | None = None
    eval_g_co2eq_per_1000: float | None = None
    energy_method: str | None = None
    """`measured (...)` or `estimated (...)`: how codecarbon got the power."""
    eval_flops: int | None = None
    """Matrix FLOP of the merged evaluation over the real tokens, padding excluded (`kdlora.bench.flops`)."""
    eval_mfu: float | None = None
    """eval_flops / eval_seconds over the CPU's peak in the row's precision (a fraction; None on a GPU, for a
    quantised form, or where the CPU has no unit for the precision)."""
    eval_peak: str | None = None
    """The peak `eval_mfu` is measured against: cores x clock x FLOP per cycle, and where each came from."""
    error: str | None = None
    """Why the measurement failed, or None."""

    def to_dict(self) -> dict:
        return asdict(self)


MEASURED = ("peak_memory_mb", "memory_kind", "train_step_seconds", "eval_seconds", "eval_seconds_unmerged",
            "latency_ms_p50", "latency_ms_p90", "throughput_per_s", "size_mb", "eval_energy_kwh", "eval_g_co2eq",
            "eval_wh_per_1000", "eval_g_co2eq_per_1000", "energy_method", "eval_flops", "eval_mfu", "eval_peak")
"""The fields of a BenchRow a worker fills in."""


@dataclass
class Job:
    """One row of bench.json: a (family, method, rank); `measure` says whether a worker measures it."""

    family: str
    method: str
    rank: int | None
    measure: bool
    form: tuple[str, str, str] = DEFAULT_FORM
    """(runtime, precision, quantize) of the inference measured."""
    row: BenchRow | None = None

    @property
    def name(self) -> str:
        form = "" if self.form == DEFAULT_FORM else "/" + "-".join(p for p in self.form if p != "none")
        return f"{self.family}/{self.method}" + (f"/r{self.rank}" if self.rank else "") + form


def plan(settings: BenchSettings) -> list[Job]:
    """The rows in output order: family, then method, then rank (FFT has one row, rank None), then inference form
    (a measured rank has one row per form; the first form's stands for it in Table II)."""
    jobs, forms = [], settings.forms()
    for family in settings.family_names():
        for name in settings.methods:
            method = get_method(name)
            ranks = settings.ranks if method.uses_lora else (None,)
            for i, rank in enumerate(ranks):
                measure = not settings.params_only and (settings.all_ranks or i == 0)
                for form in forms if measure else forms[:1]:
                    jobs.append(Job(get_family(family).name, method.name, rank, measure, form))
    return jobs


def worker_job(settings: BenchSettings, job: Job) -> dict:
    """The JSON a worker receives."""
    keys = ("device", "num_labels", "load_weights", "tiny", "batch_size", "train_seq_len", "train_steps", "eval_size",
            "eval_batch_size", "pad_to", "group_by_length", "seed", "threads", "model", "student", "track_energy")
    runtime, precision, quantize = job.form
    return {"family": job.family, "method": job.method, "rank": job.rank, **{k: getattr(settings, k) for k in keys},
            "runtime": runtime, "precision": precision, "quantize": quantize}


PRELOADED = ("torch", "transformers", "peft", "kdlora.bench.worker")
"""What the worker server imports once (~4.5 CPU-seconds on a 2-core EPYC): each worker forked from it starts
with them in memory instead of importing them again. Only imports: the server never runs a torch operation, so no
thread pool exists yet when it forks."""


def run_worker(job: dict) -> dict:
    """Measure one configuration in a fresh process of its own, forked from a server that has the libraries
    imported (multiprocessing's forkserver, PRELOADED): one process per configuration still makes its peak RSS
    (Linux VmHWM, reset when its tracker starts) and any crash its own."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOADED))  # read when the server starts: the first call
    receiver, sender = context.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="kdlora-worker-") as folder:
        log = Path(folder) / "output.log"  # a forked server's child inherits no descriptor of ours: a path
        proc = context.Process(target=_worker_main, args=(job, sender, str(log)), daemon=True)
        proc.start()
        sender.close()
        try:
            result = receiver.recv()
        except EOFError:  # the worker died before it could answer
            result = None
        proc.join()
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    tail = (text.strip().splitlines() or ["no output"])[-1]
    if proc.exitcode is not None and proc.exitcode < 0:
        return {"error": f"worker killed by signal {-proc.exitcode}" +
                (" (out of memory?)" if proc.exitcode == -9 else "")}
    if result is None:
        return {"error": f"worker exited with code {proc.exitcode}: {tail[:300]}"}
    return result


def _worker_main(job: dict, sender, log: str) -> None:
    """In the forked worker: its output into `log` (the terminal stays quiet, a crash's last line is kept), then
    `measure` (whose failures come back as `{"error": ...}`, like the command-line worker's)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sender.send(worker.run_job(job))


def _cost(settings: BenchSettings, job: Job, eval_tokens: int) -> float:
    """Relative work of a job (forward FLOPs), so the progress bar's remaining time is an estimate."""
    family, method = get_family(job.family), get_method(job.method)
    per_token = modeling.forward_flops_per_token(family.architecture(method.role), 32, settings.tiny)
    train = 3 * settings.train_steps * settings.batch_size * settings.train_seq_len
    evals = eval_tokens * (2 if method.uses_lora else 1)
    return per_token * (train + evals) / 1e9


def run_bench(settings: BenchSettings, progress: bool = True, launch: Launcher = run_worker) -> dict:
    """Count and measure every row of `settings`; returns the bench.json dict (failed cells None, with `error`)."""
    from tqdm import tqdm

    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("device: cuda requested but no CUDA GPU is available here")
    environment = describe_environment(settings.device)
    started = time.perf_counter()
    jobs = plan(settings)
    modeling.quiet_peft_deprecation()
    for job in jobs:
        family, method = get_family(job.family), get_method(job.method)
        counts = modeling.count(family, method, job.rank, settings.num_labels, settings.tiny)
        job.row = BenchRow(job.family, family.architecture(method.role).hub_name, job.method, job.rank,
                           *job.form, adapter_params=counts.adapter, trainable_params=counts.trainable,
                           total_params=counts.total)
    stage_seconds = {"params": round(time.perf_counter() - started, 2)}

    lengths = evalset.eval_lengths(settings.eval_size, settings.seed)
    eval_batches = evalset.eval_batches(lengths, settings.eval_batch_size, 30000, settings.pad_to,
                                        settings.group_by_length, settings.seed)
    eval_tokens = evalset.padded_tokens(eval_batches)
    measured = [job for job in jobs if job.measure]
    costs = {job.name: _cost(settings, job, eval_tokens) for job in measured}
    # the bar advances by each job's FLOPs, so its remaining time is an estimate of the whole run's
    with tqdm(total=sum(costs.values()), desc="bench", disable=not progress or not measured, file=sys.stderr,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}", dynamic_ncols=True) as bar:
        for job in measured:
            bar.set_postfix_str(job.name)
            start = time.perf_counter()
            result = launch(worker_job(settings, job))
            stage_seconds[job.name] = round(time.perf_counter() - start, 2)
            job.row.error = result.get("error")
            for name in MEASURED:
                setattr(job.row, name, result.get(name))
            bar.update(costs[job.name])
    environment["load_average_end"] = load_average()
    config = {**asdict(settings), "families": list(settings.family_names()),
              "measured_ranks": sorted({j.rank for j in measured if j.rank}),
              "dtype": "float32", "optimizer": "AdamW",
              "memory_kind": next((j.row.memory_kind for j in measured if j.row.memory_kind), None),
              "eval_lengths": {**evalset.LengthDistribution().describe(), "seed": settings.seed},
              "eval_padded_tokens": eval_tokens, "eval_batches": len(eval_batches),
              "stage_seconds": stage_seconds, "wall_seconds": round(time.perf_counter() - started, 2)}
    return {"rows": [job.row.to_dict() for job in jobs], "config": config, "environment": environment}
