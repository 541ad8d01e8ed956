"""Where runs execute: here, one after another (default), or as Ray tasks spread over a cluster.

Either way the executor hands each result back to the sweep driver, which alone writes the store; a Ray worker
never touches the database. Run folders must be reachable from every worker (shared storage on a real cluster):
a KD-LoRA run reads its FFT teacher's saved model from the teacher's run folder.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from kdlora.backends import Backends
from kdlora.errors import UserError

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
    """Runs one after another in this process."""

    def run(self, specs, driver, backends: Backends, resources, progress: bool) -> None:
        for spec in specs:
            config, failure = driver.prepare(spec)
            result = failure or execute(spec.kind, config, str(driver.out_dir(spec)), backends, progress)
            driver.finish(spec, result)


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
                # local workers import this checkout (and test backends) the way the driver does
                env = {k: os.environ[k] for k in ("PYTHONPATH", "KDLORA_BACKENDS") if k in os.environ}
                ray.init(address=self.address, runtime_env={"env_vars": env} if env else None,
                         log_to_driver=False, include_dashboard=False)
            except ConnectionError as exc:
                raise UserError(f"cannot reach a Ray cluster at {self.address}: {exc}") from None
        return ray

    def run(self, specs, driver, backends: Backends, resources, progress: bool) -> None:
        if not specs:
            return
        ray = self._ray()
        remote = ray.remote(execute).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                             max_retries=0)
        pending_keys = {s.key for s in specs}
        finished: set[str] = set()
        waiting = list(specs)
        in_flight = {}
        try:
            while waiting or in_flight:
                for spec in [s for s in waiting if s.needs not in pending_keys or s.needs in finished]:
                    waiting.remove(spec)
                    config, failure = driver.prepare(spec)
                    if failure is not None:
                        driver.finish(spec, failure)
                        finished.add(spec.key)
                        continue
                    ref = remote.remote(spec.kind, config, str(driver.out_dir(spec)), backends, False)
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


def make_executor(name: str, address: str | None = None):
    """The executor called `name` (`local` or `ray`)."""
    if name == "local":
        if address:
            raise UserError("--address only applies to --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise UserError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")
