"""Where runs execute: here, one after another (default) or `--jobs N` train runs at once, or as Ray tasks spread
over a cluster.

Either way the executor takes runs from the sweep driver (`Driver.claim_next`: each run claimed in the store, so
sweeps sharing it split the work) and hands each result back to it; the driver alone writes the store, and a Ray
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
from kdlora.sweep.backends import Backends
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
            if self.jobs > 1:
                self._run_parallel(specs, driver, starter)
            else:
                self._run_serial(specs, driver, backends, progress, starter)

    def _run_serial(self, specs, driver, backends: Backends, progress: bool, starter) -> None:
        waiting = list(specs)
        while waiting:
            taken = driver.claim_next(waiting)
            if taken is None:
                if waiting:  # (a run recorded failed before it started may have been the last)
                    driver.wait()
                continue
            spec, config = taken
            out_dir = str(driver.out_dir(spec))
            if self.isolate:
                result = execute_in_child(spec.kind, config, out_dir, progress, starter)
            else:
                result = execute(spec.kind, config, out_dir, backends, progress)
            driver.finish(spec, result)

    def _run_parallel(self, specs, driver, starter) -> None:
        cores = available_cores()
        waiting, running = list(specs), {}  # running: spec key -> (spec, Child)
        together: dict[str, int] = {}  # the most runs running at once while each ran (itself included)
        threads_of: dict[str, int] = {}

        def may_start(spec) -> bool:
            """Up to `jobs` at once, in order; a bench run waits for the machine to itself, and nothing passes it."""
            alone = spec.kind == "bench" or any(s.kind == "bench" for s, _ in running.values())
            return len(running) < self.jobs and not (alone and running)

        try:
            while waiting or running:
                while (taken := driver.claim_next(waiting, may_start)) is not None:
                    spec, config = taken
                    # the cores shared by the train runs that can run now: this one, those running, those ready
                    ready = sum(s.kind == "train" and driver.ready(s) for s in waiting)
                    threads = max(1, cores // min(self.jobs, len(running) + 1 + ready))
                    env = None if spec.kind == "bench" else {"OMP_NUM_THREADS": str(threads)}
                    running[spec.key] = spec, Child(spec.kind, config, str(driver.out_dir(spec)), False, env, starter)
                    threads_of[spec.key] = threads
                    for key in running:
                        together[key] = max(together.get(key, 1), len(running))
                if not running:
                    if waiting:
                        driver.wait()
                    continue
                for key, (spec, child) in list(running.items()):
                    if child.poll():
                        del running[key]
                        result = child.result()
                        most, threads = together.pop(key), threads_of.pop(key)
                        if spec.kind == "train":
                            result.update(parallel_runs=most, threads=threads)
                        driver.finish(spec, result)
                time.sleep(0.2)
        finally:
            for _, child in running.values():
                child.kill()


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
        waiting, in_flight = list(specs), {}
        try:
            while waiting or in_flight:
                while (taken := driver.claim_next(waiting)) is not None:
                    spec, config = taken
                    # per task: a search's trial changes between sweeps of one Ray session
                    searching = TRIAL_ENV in os.environ
                    task = remote.options(runtime_env={"env_vars": self._env()}) if searching else remote
                    ref = task.remote(spec.kind, config, str(driver.out_dir(spec)), backends, False)
                    in_flight[ref] = spec
                if not in_flight:
                    if waiting:
                        driver.wait()
                    continue
                # a timeout: runs other sweeps hold may end, and what waits on them may start
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=driver.POLL_S if waiting else None)
                for ref in done:
                    spec = in_flight.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died (out of memory, node lost)
                        result = {"status": "failed", "reason": f"Ray task failed: {str(exc).splitlines()[0]}"}
                    driver.finish(spec, result)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise


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
