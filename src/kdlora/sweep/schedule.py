"""The one scheduler every executor uses: take the runs the driver can start, start each through a launcher, hand
each result back to the driver, until none is left.

*What* runs and in which order is the driver's (`Driver.claim_next`: leases, teachers first, runs other sweeps
hold); *where* a run executes is the launcher's (`kdlora.sweep.executors`: one at a time in this process, child
processes on this machine, Ray tasks on a cluster), as optimum-benchmark keeps its launchers apart from its
scenarios. The scheduler alone decides *when*: up to the launcher's `jobs` at once, a bench run with the machine to
itself, and nothing passes the first ready run that may not start yet.
"""

from __future__ import annotations

from typing import Protocol

from kdlora.sweep.expand import RunSpec


class Launcher(Protocol):
    """Where runs execute, started one by one and collected as they end."""

    jobs: int | None
    """Runs at once on this machine (a bench run alone); None: every ready run at once (a cluster places them)."""

    def start(self, spec: RunSpec, config: dict, out_dir: str, ready: int) -> None:
        """Start `spec` with `config`, writing into `out_dir`; `ready`: the train runs that could start after it
        now, which may share the machine with it."""

    def finished(self, timeout: float | None) -> list[tuple[str, dict]]:
        """(key, result) of the runs that ended, waiting up to `timeout` seconds (None: until one does) for one."""

    def stop(self) -> None:
        """End every run still executing (the sweep was interrupted or failed)."""


def schedule(specs: list[RunSpec], driver, launcher: Launcher) -> None:
    """Run `specs` through `launcher`, each claimed from and handed back to `driver` (`kdlora.sweep.driver`)."""
    waiting, running = list(specs), {}  # running: key -> spec

    def may_start(spec: RunSpec) -> bool:
        """Up to `jobs` at once, in order; a bench run waits for the machine to itself, and nothing passes it."""
        if launcher.jobs is None:
            return True
        alone = spec.kind == "bench" or any(s.kind == "bench" for s in running.values())
        return len(running) < launcher.jobs and not (alone and running)

    try:
        while waiting or running:
            while (taken := driver.claim_next(waiting, may_start)) is not None:
                spec, config = taken
                ready = sum(s.kind == "train" and driver.ready(s) for s in waiting)
                launcher.start(spec, config, str(driver.out_dir(spec)), ready)
                running[spec.key] = spec
            if not running:
                if waiting:  # (a run recorded failed before it started may have been the last)
                    driver.wait()
                continue
            # a timeout while runs wait: runs other sweeps hold may end, and what waits on them may start
            for key, result in launcher.finished(driver.POLL_S if waiting else None):
                driver.finish(running.pop(key), result)
    finally:
        launcher.stop()
