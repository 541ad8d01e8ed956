"""A warm starter: one process that imports the heavy libraries once and forks a fresh process for every run:
`python -m MODULE ARGS` without paying for Python's start and the imports each time.

A local sweep runs each run in a process of its own (its peak RSS and any crash its own). Started as a new Python,
every run paid for importing torch, transformers, peft and accelerate again (5-8 s of the 8-13 s each run spent
outside its training loop on the AMX Xeon, issue 18). Forked from this starter, each run is still a fresh process
of its own, with the libraries already in memory: what `kdlora.bench` does for its workers (`bench.runner`).

    with WarmStarter() as starter:                     # `python -m kdlora.sweep.warm`, importing PRELOADED
        pid = starter.start("kdlora.sweep.executors", [job_path], env, exit_path)  # forked: runs the module
        starter.exit_code(exit_path)                    # None while it runs, then its exit status (< 0: a signal)

The starter only imports: it never runs a torch operation, so no thread pool exists when it forks (an OpenMP pool
does not survive a fork). Each forked run takes the environment the driver gives it (a search's trial, its threads:
`OMP_NUM_THREADS` becomes `torch.set_num_threads`, since the OpenMP runtime read the variable when it loaded),
dies with the starter, which dies with the driver (Linux), and its exit status is written to the path it was given.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from kdlora.sweep.backends import BACKENDS_ENV

PRELOADED = ("torch", "transformers", "peft", "accelerate", "pandas", "scipy.stats", "sklearn.metrics",
             "transformers.optimization", "kdlora.train", "kdlora.data.loaders")
"""What the starter imports once for the real backends: what a training run imports (a tiny run imports nothing
else heavy after these). Test backends (`$KDLORA_BACKENDS`) need none of it."""


def die_with_parent() -> None:
    """In a child before it runs: ask Linux to SIGKILL it when its parent dies (elsewhere: nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WarmStarter:
    """The driver's side: starts the starter process and asks it for one forked process per job."""

    def __init__(self):
        answers, answering = os.pipe()  # the starter's pids come back here; its stdout stays the runs' own
        self.process = subprocess.Popen([sys.executable, "-m", "kdlora.sweep.warm", str(answering)],
                                        stdin=subprocess.PIPE, pass_fds=(answering,), text=True,
                                        preexec_fn=die_with_parent if sys.platform == "linux" else None)
        os.close(answering)
        self.answers = os.fdopen(answers, encoding="ascii")

    def start(self, module: str, args: list[str], env: dict, exit_path: str) -> int:
        """Fork a process that runs `python -m module *args` with the environment `env` and, when it ends, writes its
        exit status to `exit_path`; returns its pid."""
        request = {"module": module, "args": args, "env": env, "exit_path": exit_path}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.answers.readline()
        if not answer:
            raise RuntimeError(f"the warm starter ended (exit status {self.process.wait()})")
        return int(answer)

    def exit_code(self, exit_path: str) -> int | None:
        """The exit status of the process started with `exit_path` once it ended, else None; -9 when the starter
        itself is gone (its processes died with it)."""
        done = Path(exit_path)
        if done.is_file():
            return int(done.read_text())
        return -signal.SIGKILL if self.process.poll() is not None else None

    def close(self) -> None:
        """End the starter (its remaining runs die with it)."""
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.answers.close()

    def __enter__(self) -> WarmStarter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _serve(answering: int) -> int:
    """The starter's loop: a JSON line per job on stdin, its pid back on the `answering` descriptor; ends when stdin
    closes."""
    if not os.environ.get(BACKENDS_ENV):
        for name in PRELOADED:
            __import__(name)
    running: dict[int, Path] = {}  # pid -> where its exit status goes
    requests, replies = sys.stdin, os.fdopen(answering, "w", encoding="ascii")
    while True:
        ready, _, _ = select.select([requests], [], [], 0.1)
        _reap(running)
        if not ready:
            continue
        line = requests.readline()
        if not line:
            return 0
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_forked(request["module"], request["args"], request["env"], answering)
        running[pid] = Path(request["exit_path"])
        replies.write(f"{pid}\n")
        replies.flush()


def _reap(running: dict[int, Path]) -> None:
    """Collect the processes that ended and write each one's exit status where it was asked."""
    for pid, path in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            del running[pid]
            partial = path.with_name(path.name + ".partial")
            try:
                partial.write_text(str(os.waitstatus_to_exitcode(status)))
                partial.replace(path)
            except OSError:  # the driver killed the run and removed its folder: nobody asks
                pass


def _run_forked(module: str, args: list[str], env: dict, answering: int) -> None:
    """In the forked process: the run's environment and threads, then `python -m module *args`; never returns."""
    code = 1
    try:
        die_with_parent()
        os.close(answering)  # the starter's answers and requests are not the run's
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.environ.clear()
        os.environ.update(env)
        if "torch" in sys.modules and env.get("OMP_NUM_THREADS"):
            sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(_serve(int(sys.argv[1])))
