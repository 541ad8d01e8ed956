"""Where runs execute: here, one after another (default) or `--jobs N` train runs at once, or as Ray tasks spread
over a cluster.

Either way the executor hands each result back to the sweep driver, which alone writes the store; a Ray worker
never touches the database. Run folders must be reachable from every worker (shared storage on a real cluster):
a KD-LoRA run reads its FFT teacher's saved model from the teacher's run folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from kdlora.errors import UserError
from kdlora.sweep.backends import Backends
from kdlora.trial import TRIAL_ENV

EXECUTORS = ("local", "ray")


def execute(kind: str, config: dict, out_dir: str, backends: Backends, progress: bool) -> dict:
    """Run one train or bench run; never raises for a failed run: the result says `failed` and why."""
    started = time.monotonic()
    run = backends.train if kind == "train" else backends.bench
    try:
        result = dict(run(config, Path(out_dir), progress))
        result.setdefault("status", "done")
    except UserError as exc:
        result = {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # a bug or an environment failure in one run must not end the sweep
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}".strip(),
                  "traceback": traceback.format_exc(limit=20)}
    result["wall_seconds"] = round(time.monotonic() - started, 3)
    return result


class LocalExecutor:
    """Runs on this machine: each in a fresh child process (`isolate`, the CLI's choice), or in this one; one after
    another, or `jobs` train runs at once.

    A child process per run keeps each run's peak memory its own (a process's peak RSS only grows) and a crash or
    out-of-memory kill confined to that run. The child dies with the driver (Linux), so a killed sweep leaves no
    run writing behind it. Isolated runs use `get_backends()`; in-process runs use the `backends` given.

    With `jobs` > 1 (isolated only) up to `jobs` train runs whose teachers are done run at once, each with
    cores / jobs threads (small models use two threads poorly, so two one-thread runs finish sooner than two
    two-thread runs one after the other); their results say `parallel_runs`, since each one's seconds were
    measured sharing the machine. A bench run always runs alone: its memory and latency figures are the point.
    """

    def __init__(self, isolate: bool = False, jobs: int = 1):
        if jobs < 1:
            raise UserError(f"--jobs: {jobs} is not a positive integer")
        if jobs > 1 and not isolate:
            raise ValueError("parallel local runs need isolate=True (one child process per run)")
        self.isolate, self.jobs = isolate, jobs

    def run(self, specs, driver, backends: Backends, resources, progress: bool) -> None:
        if self.jobs > 1:
            self._run_parallel(specs, driver)
            return
        for spec in specs:
            config, failure = driver.prepare(spec)
            out_dir = str(driver.out_dir(spec))
            if failure is not None:
                result = failure
            elif self.isolate:
                result = execute_in_child(spec.kind, config, out_dir, progress)
            else:
                result = execute(spec.kind, config, out_dir, backends, progress)
            driver.finish(spec, result)

    def _run_parallel(self, specs, driver) -> None:
        threads = str(max(1, (os.cpu_count() or 1) // self.jobs))
        pending_keys = {s.key for s in specs}
        finished: set[str] = set()
        waiting, running = list(specs), {}  # running: spec key -> (spec, Child)
        try:
            while waiting or running:
                for spec in list(waiting):
                    if not _ready(spec, pending_keys, finished):
                        continue
                    alone = spec.kind == "bench" or any(s.kind == "bench" for s, _ in running.values())
                    if len(running) >= self.jobs or alone and running:
                        break  # in order: a bench run waits for the machine to itself, and nothing passes it
                    waiting.remove(spec)
                    config = _prepared(driver, spec, finished)
                    if config is None:
                        continue
                    env = None if spec.kind == "bench" else {"OMP_NUM_THREADS": threads}
                    running[spec.key] = spec, Child(spec.kind, config, str(driver.out_dir(spec)), False, env)
                    if spec.kind == "bench":
                        break
                if not running:
                    if waiting and not any(_ready(s, pending_keys, finished) for s in waiting):
                        raise RuntimeError(f"sweep: no run can start ({waiting[0].label} waits on another)")
                    continue
                for key, (spec, child) in list(running.items()):
                    if child.poll():
                        del running[key]
                        result = child.result()
                        if spec.kind == "train":
                            result["parallel_runs"] = self.jobs
                        driver.finish(spec, result)
                        finished.add(spec.key)
                time.sleep(0.2)
        finally:
            for _, child in running.values():
                child.kill()


def _ready(spec, pending_keys: set, finished: set) -> bool:
    """Whether every run `spec` needs that this sweep runs has finished."""
    return all(k not in pending_keys or k in finished for k in spec.needs)


def _prepared(driver, spec, finished: set) -> dict | None:
    """The config to run `spec` with, or None when it failed before starting (its teacher is not done): then its
    failure is recorded and it counts as finished."""
    config, failure = driver.prepare(spec)
    if failure is not None:
        driver.finish(spec, failure)
        finished.add(spec.key)
        return None
    return config


class Child:
    """One run in a fresh `python -m kdlora.sweep.executors` process; its result comes back through a JSON file.
    The process dies with the driver (Linux)."""

    def __init__(self, kind: str, config: dict, out_dir: str, progress: bool, env: dict | None = None):
        self.folder = tempfile.TemporaryDirectory(prefix="kdlora-run-")
        job, self.answer = Path(self.folder.name) / "job.json", Path(self.folder.name) / "result.json"
        job.write_text(json.dumps({"kind": kind, "config": config, "out_dir": out_dir, "progress": progress,
                                   "result": str(self.answer)}), encoding="utf-8")
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, "-m", "kdlora.sweep.executors", str(job)],
                                        env={**os.environ, **env} if env else None,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def poll(self) -> bool:
        """Whether the process has ended."""
        return self.process.poll() is not None

    def result(self) -> dict:
        """The run's result (waits for the process), or a failure saying how the process ended."""
        code = self.process.wait()
        try:
            if self.answer.is_file():
                return json.loads(self.answer.read_text(encoding="utf-8"))
        finally:
            self.folder.cleanup()
        reason = (f"run process killed by signal {-code}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
                  if code < 0 else f"run process exited with code {code} and no result")
        return {"status": "failed", "reason": reason, "wall_seconds": round(time.monotonic() - self.started, 3)}

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.folder.cleanup()


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGKILL it when the driver dies (elsewhere: nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def execute_in_child(kind: str, config: dict, out_dir: str, progress: bool) -> dict:
    """`execute` in a fresh `python -m kdlora.sweep.executors` process (`Child`), waiting for its result."""
    child = Child(kind, config, out_dir, progress)
    try:
        return child.result()
    except BaseException:
        child.kill()
        raise


def _child_main(job_path: str) -> int:
    from kdlora.sweep.backends import get_backends

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    result = execute(job["kind"], job["config"], job["out_dir"], get_backends(), job["progress"])
    Path(job["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


class RayExecutor:
    """Each run a Ray task asking for the experiment's `num_cpus` / `num_gpus`; results come back to the driver.

    `address` joins an existing cluster (`ray start --head` prints it; "auto" finds a local one); without it a Ray
    already initialised in this process is used, else a local one is started.
    """

    def __init__(self, address: str | None = None):
        self.address = address

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'kdlora[ray]'") from None
        if not ray.is_initialized():
            try:
                # a local Ray's workers import this checkout (and test backends) the way the driver does; a
                # cluster's workers need kdlora installed
                env = self._env()
                ray.init(address=self.address, runtime_env={"env_vars": env} if env else None,
                         log_to_driver=False, include_dashboard=False)
            except ConnectionError as exc:
                raise UserError(f"cannot reach a Ray cluster at {self.address}: {exc}") from None
        return ray

    def _env(self) -> dict:
        """The variables a worker needs as the driver has them now: test backends, a search's trial and, for a
        local Ray, this checkout's path (a cluster's workers need kdlora installed)."""
        names = ("KDLORA_BACKENDS", TRIAL_ENV) + (("PYTHONPATH",) if self.address is None else ())
        return {k: os.environ[k] for k in names if k in os.environ}

    def run(self, specs, driver, backends: Backends, resources, progress: bool) -> None:
        if not specs:
            return
        ray = self._ray()
        # max_calls=1: a fresh worker process per run, so each run's peak memory is its own
        remote = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0,
                            max_calls=1)(execute)
        pending_keys = {s.key for s in specs}
        finished: set[str] = set()
        waiting = list(specs)
        in_flight = {}
        try:
            while waiting or in_flight:
                for spec in [s for s in waiting if _ready(s, pending_keys, finished)]:
                    waiting.remove(spec)
                    config = _prepared(driver, spec, finished)
                    if config is None:
                        continue
                    # per task: a search's trial changes between sweeps of one Ray session
                    searching = TRIAL_ENV in os.environ
                    task = remote.options(runtime_env={"env_vars": self._env()}) if searching else remote
                    ref = task.remote(spec.kind, config, str(driver.out_dir(spec)), backends, False)
                    in_flight[ref] = spec
                if not in_flight:
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    spec = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died (out of memory, node lost)
                        result = {"status": "failed", "reason": f"Ray task failed: {str(exc).splitlines()[0]}"}
                    driver.finish(spec, result)
                    finished.add(spec.key)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise


def make_executor(name: str, address: str | None = None, jobs: int = 1):
    """The executor called `name`: `local` (each run in its own child process, `jobs` train runs at once) or
    `ray`."""
    if name == "local":
        if address:
            raise UserError("--address only applies to --executor ray")
        return LocalExecutor(isolate=True, jobs=jobs)
    if name == "ray":
        if jobs != 1:
            raise UserError("--jobs only applies to --executor local (Ray schedules by the experiment's num_cpus)")
        return RayExecutor(address)
    raise UserError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")


def local_jobs(value: str | int, experiment, executor: str = "local") -> int:
    """--jobs as a number: `auto` is the cores over the experiment's `num_cpus` when its runs need no GPU (one run
    per `num_cpus` cores, as Ray would place them), else 1; under Ray, 1 (Ray schedules by num_cpus itself)."""
    if str(value) == "auto":
        resources = experiment.resources
        if executor != "local" or resources.num_gpus:
            return 1
        return max(1, int((os.cpu_count() or 1) // max(1.0, resources.num_cpus)))
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--jobs: {value!r} is not a number or auto") from None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
