"""The options and the run step that `kdlora sweep` and `kdlora reproduce` share (`--db` also `report` and `runs`).

Not a command itself (the leading underscore keeps it out of the CLI's list).
"""

from __future__ import annotations

from kdlora.store import writable_store
from kdlora.sweep.backends import get_backends
from kdlora.sweep.driver import check_data, run_sweep
from kdlora.sweep.executors import EXECUTORS, local_jobs, make_executor
from kdlora.trial import trial_env


def add_sweep_arguments(parser, with_out: bool = False, jobs: str = "1") -> None:
    """The options `kdlora sweep` and `kdlora reproduce` share (`jobs`: the default of --jobs)."""
    add_db_argument(parser)
    parser.add_argument("--runs-dir", metavar="DIR",
                        help="where run folders (models, metrics.json) go (default: <db name>-runs/ beside the db)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="local: one run after another here (default); ray: each run a Ray task")
    parser.add_argument("--jobs", default=jobs, metavar="N",
                        help="local executor: up to N train runs at once, sharing the available cores (CPU affinity "
                             "and cgroup quota) among the runs that can run then; auto: those cores / the "
                             f"experiment's num_cpus on a CPU-only experiment, else 1 (default {jobs}); bench runs "
                             "always run alone")
    parser.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                        help="local executor: start each run as a new Python that imports torch and the rest again, "
                             "instead of forking it from a process that imported them once (each run is a fresh "
                             "process either way)")
    parser.add_argument("--address", metavar="ADDR",
                        help="Ray cluster to join (e.g. auto, or HOST:6379); default: start a local Ray")
    parser.add_argument("--rerun-failed", action="store_true", help="rerun runs the store holds as failed")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_db_argument(parser) -> None:
    parser.add_argument("--db", default=None, metavar="PATH",
                        help="results database (default: $KDLORA_DB, else ./kdlora-results.db)")


def sweep_from_args(args, experiment):
    """Run `experiment` with the executor and options of `args` (as added by add_sweep_arguments) into `args.db`,
    after checking them and the experiment's data (a refused sweep leaves no store behind)."""
    backends = get_backends()
    executor = make_executor(args.executor, args.address, local_jobs(args.jobs, experiment, args.executor),
                             args.warm_start)
    trial_env()  # a garbled search trial in the environment would fail every run
    check_data(experiment, backends)
    with writable_store(args.db) as store:
        summary = run_sweep(experiment, store, executor, backends, runs_dir=args.runs_dir,
                            rerun_failed=args.rerun_failed, progress=args.progress)
    print(f"sweep {experiment.name}: {summary.line()}")
    return summary
