"""Where runs execute: here, one after another (default) or `--jobs N` train runs at once, or as Ray tasks spread
over a cluster.

Either way one scheduler (`kdlora.sweep.schedule`) takes runs from the sweep driver (`Driver.claim_next`: each run
claimed in the store, so sweeps sharing it split the work) and hands each result back to it; an executor only picks
the launcher that starts them (`InProcess`, `Children`, `RayTasks`). The driver alone writes the store, and a Ray
worker never touches the database. Run folders must be reachable from every worker (shared storage on a real cluster):
a KD-LoRA run reads its FFT teacher's saved model from the teacher's run folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from kdlora.sweep.backends import Backends, get_backends
from kdlora.sweep.schedule import schedule
from kdlora.sweep.warm import WarmStarter, die_with_parent
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
    run writing behind it. Isolated runs use `get_backends()`; in-process runs use the `backends` given. With `warm`
    (the default) each child is forked from a starter that imported the libraries once (`kdlora.sweep.warm`), not a
    new Python that imports them again: still a fresh process per run.

    With `jobs` > 1 (isolated only) up to `jobs` train runs whose teachers are done run at once, each with the
    available cores (`available_cores`) shared among the runs that can run then (small models use two threads
    poorly, so two one-thread runs finish sooner than two two-thread runs one after the other; a run that can only
    run alone, such as a teacher every other run waits for, gets them all). Each result says `threads` and
    `parallel_runs`: the most runs that ran at once while it ran (1: alone), since its seconds were measured sharing
    the machine. A bench run always runs alone: its memory and latency figures are the point.
    """

    def __init__(self, isolate: bool = False, jobs: int = 1, warm: bool = True):
        if jobs < 1:
            raise UserError(f"--jobs: {jobs} is not a positive integer")
        if jobs > 1 and not isolate:
            raise ValueError("parallel local runs need isolate=True (one child process per run)")
        self.isolate, self.jobs, self.warm = isolate, jobs, warm

    def run(self, specs, driver, backends: Backends, resources, progress: bool) -> None:
        warm = self.isolate and self.warm and bool(specs)
        with WarmStarter() if warm else contextlib.nullcontext() as starter:
            launcher = Children(self.jobs, progress, starter) if self.isolate else InProcess(backends, progress)
            schedule(specs, driver, launcher)


class InProcess:
    """The launcher of runs in this process, one at a time, with the `backends` given (tests inject fakes)."""

    jobs = 1

    def __init__(self, backends: Backends, progress: bool):
        self.backends, self.progress = backends, progress
        self.ended: list[tuple[str, dict]] = []

    def start(self, spec, config: dict, out_dir: str, ready: int) -> None:
        self.ended.append((spec.key, execute(spec.kind, config, out_dir, self.backends, self.progress)))

    def finished(self, timeout: float | None) -> list[tuple[str, dict]]:
        ended, self.ended = self.ended, []
        return ended

    def stop(self) -> None:
        self.ended = []


class Children:
    """The launcher of runs in child processes (`Child`, real backends, forked from `starter` when given), up to
    `jobs` at once.

    With `jobs` > 1 a train run gets the available cores shared among the train runs that can run when it starts
    (`OMP_NUM_THREADS`), and its result says `threads` and `parallel_runs` (the most runs at once while it ran)."""

    POLL_S = 0.2
    """How often the children are looked at while none has ended."""

    def __init__(self, jobs: int, progress: bool, starter=None):
        self.jobs, self.progress = jobs, progress and jobs == 1  # progress bars of runs at once would interleave
        self.starter = starter  # a `WarmStarter` the children are forked from, or None: a new Python each
        self.cores = available_cores()
        self.running: dict[str, tuple[Child, int | None]] = {}  # key -> (child, threads when shared)
        self.together: dict[str, int] = {}  # the most runs running at once while each ran (itself included)

    def start(self, spec, config: dict, out_dir: str, ready: int) -> None:
        threads = None
        if self.jobs > 1 and spec.kind == "train":  # the cores shared by this run, those running, those ready
            threads = max(1, self.cores // min(self.jobs, len(self.running) + 1 + ready))
        env = {"OMP_NUM_THREADS": str(threads)} if threads else None
        self.running[spec.key] = Child(spec.kind, config, out_dir, self.progress, env, self.starter), threads
        for key in self.running:
            self.together[key] = max(self.together.get(key, 1), len(self.running))

    def finished(self, timeout: float | None) -> list[tuple[str, dict]]:
        waited = 0.0
        while not (ended := [key for key, (child, _) in self.running.items() if child.poll()]):
            if timeout is not None and waited >= timeout:
                return []
            time.sleep(self.POLL_S)
            waited += self.POLL_S
        results = []
        for key in ended:
            (child, threads), most = self.running.pop(key), self.together.pop(key)
            result = child.result()
            if threads is not None:
                result.update(parallel_runs=most, threads=threads)
            results.append((key, result))
        return results

    def stop(self) -> None:
        for child, _ in self.running.values():
            child.kill()
        self.running.clear()


def available_cores(cgroups: str | None = None, root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity (taskset, a container's cpuset), capped by its cgroup's CPU
    quota (what `docker --cpus` sets), at least 1. `os.cpu_count()` counts the machine's, whatever the container
    allows. `cgroups`: /proc/self/cgroup's text (read when None); `root`: where the cgroup file systems are."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cpu_quota(cgroups, root)
    return max(1, min(cores, int(quota)) if quota is not None else cores)


def _cpu_quota(cgroups: str | None, root: Path) -> float | None:
    """This process's cgroup CPU quota in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), or
    None where none is set or none can be read. A container sees its own cgroup at the mount's root."""
    try:
        text = Path("/proc/self/cgroup").read_text() if cgroups is None else cgroups
        for line in text.splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":  # v2: "QUOTA PERIOD" or "max PERIOD"
                for folder in (root / path.lstrip("/"), root):
                    if (folder / "cpu.max").is_file():
                        quota, period = (folder / "cpu.max").read_text().split()[:2]
                        return None if quota == "max" else int(quota) / int(period)
            elif "cpu" in controllers.split(","):  # v1: a quota of -1 is none
                for folder in (root / controllers / path.lstrip("/"), root / controllers):
                    if (folder / "cpu.cfs_quota_us").is_file():
                        quota = int((folder / "cpu.cfs_quota_us").read_text())
                        return None if quota < 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


class Child:
    """One run in a fresh process: a new `python -m kdlora.sweep.executors`, or forked from a `starter` that has the
    libraries imported (`kdlora.sweep.warm`); its result comes back through a JSON file. The process dies with the
    driver (Linux)."""

    def __init__(self, kind: str, config: dict, out_dir: str, progress: bool, env: dict | None = None,
                 starter: WarmStarter | None = None):
        self.folder = tempfile.TemporaryDirectory(prefix="kdlora-run-")
        self.job, self.answer = Path(self.folder.name) / "job.json", Path(self.folder.name) / "result.json"
        self.job.write_text(json.dumps({"kind": kind, "config": config, "out_dir": out_dir, "progress": progress,
                                        "result": str(self.answer)}), encoding="utf-8")
        self.started, self.starter = time.monotonic(), starter
        self.exited = str(Path(self.folder.name) / "exit")  # where a starter writes the exit status
        if starter is not None:
            self.process = None
            self.pid = starter.start("kdlora.sweep.executors", [str(self.job)], {**os.environ, **(env or {})},
                                     self.exited)
            return
        self.process = subprocess.Popen([sys.executable, "-m", "kdlora.sweep.executors", str(self.job)],
                                        env={**os.environ, **env} if env else None,
                                        preexec_fn=die_with_parent if sys.platform == "linux" else None)

    def poll(self) -> bool:
        """Whether the process has ended."""
        if self.process is None:
            return self.starter.exit_code(self.exited) is not None
        return self.process.poll() is not None

    def _wait(self) -> int:
        if self.process is not None:
            return self.process.wait()
        while (code := self.starter.exit_code(self.exited)) is None:
            time.sleep(0.05)
        return code

    def result(self) -> dict:
        """The run's result (waits for the process), or a failure saying how the process ended."""
        code = self._wait()
        try:
            if self.answer.is_file():
                return json.loads(self.answer.read_text(encoding="utf-8"))
        finally:
            self.folder.cleanup()
        reason = (f"run process killed by signal {-code}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
                  if code < 0 else f"run process exited with code {code} and no result")
        return {"status": "failed", "reason": reason, "wall_seconds": round(time.monotonic() - self.started, 3)}

    def kill(self) -> None:
        if self.process is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        else:
            self.process.kill()
        self._wait()
        self.folder.cleanup()


def execute_in_child(kind: str, config: dict, out_dir: str, progress: bool, starter: WarmStarter | None = None
                     ) -> dict:
    """`execute` in a fresh process (`Child`: a new Python, or forked from `starter`), waiting for its result."""
    child = Child(kind, config, out_dir, progress, starter=starter)
    try:
        return child.result()
    except BaseException:
        child.kill()
        raise


def _child_main(job_path: str) -> int:
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
        if specs:
            schedule(specs, driver, RayTasks(self, backends, resources))


class RayTasks:
    """The launcher of runs as Ray tasks, each asking for the experiment's `num_cpus` / `num_gpus`: all that are ready
    at once, Ray placing them."""

    jobs = None

    def __init__(self, executor: RayExecutor, backends: Backends, resources):
        self.ray, self.env_of, self.backends = executor._ray(), executor._env, backends
        # max_calls=1: a fresh worker process per run, so each run's peak memory is its own
        self.remote = self.ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=0,
                                      max_calls=1)(execute)
        self.in_flight: dict = {}  # object ref -> key

    def start(self, spec, config: dict, out_dir: str, ready: int) -> None:
        # per task: a search's trial changes between sweeps of one Ray session
        searching = TRIAL_ENV in os.environ
        task = self.remote.options(runtime_env={"env_vars": self.env_of()}) if searching else self.remote
        self.in_flight[task.remote(spec.kind, config, out_dir, self.backends, False)] = spec.key

    def finished(self, timeout: float | None) -> list[tuple[str, dict]]:
        done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
        results = []
        for ref in done:
            key = self.in_flight.pop(ref)
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:  # the worker died (out of memory, node lost)
                result = {"status": "failed", "reason": f"Ray task failed: {str(exc).splitlines()[0]}"}
            results.append((key, result))
        return results

    def stop(self) -> None:
        for ref in self.in_flight:
            self.ray.cancel(ref, force=True)
        self.in_flight.clear()


def make_executor(name: str, address: str | None = None, jobs: int = 1, warm: bool = True):
    """The executor called `name`: `local` (each run in its own child process, `jobs` train runs at once, forked
    from a warm starter unless not `warm`) or `ray`."""
    if name == "local":
        if address:
            raise UserError("--address only applies to --executor ray")
        return LocalExecutor(isolate=True, jobs=jobs, warm=warm)
    if name == "ray":
        if jobs != 1:
            raise UserError("--jobs only applies to --executor local (Ray schedules by the experiment's num_cpus)")
        if importlib.util.find_spec("ray") is None:  # said before the sweep opens its store
            raise UserError("the Ray executor needs Ray: pip install 'kdlora[ray]'")
        return RayExecutor(address)
    raise UserError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")


def local_jobs(value: str | int, experiment, executor: str = "local") -> int:
    """--jobs as a number: `auto` is the available cores over the experiment's `num_cpus` when its runs need no GPU
    (one run per `num_cpus` cores, as Ray would place them), else 1; under Ray, 1 (Ray schedules by num_cpus
    itself)."""
    if str(value) == "auto":
        resources = experiment.resources
        if executor != "local" or resources.num_gpus:
            return 1
        return max(1, int(available_cores() // max(1.0, resources.num_cpus)))
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--jobs: {value!r} is not a number or auto") from None


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
