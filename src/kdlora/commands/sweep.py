"""Expand an experiment file into runs and execute those the results store does not hold as done.

EXP is a TOML file or a bundled experiment (`default`, `paper`). FFT teachers run before the KD-LoRA runs that
distil them; a sweep interrupted at any point resumes where it stopped when run again (finished runs are kept,
the interrupted one reruns). Failed runs are kept as failed until `--rerun-failed`.

  kdlora sweep my-grid.toml
  kdlora sweep paper --executor ray --address auto
  kdlora sweep my-grid.toml --dry-run        # list the runs and their status, run nothing
  kdlora sweep my-grid.toml --search optuna --trials 20   # an Optuna search over the file's [search] ranges

With --search, each trial's runs are stored like grid runs; the study is kept in <db name>-search.db beside the
results store, so a killed search resumes when run again (see kdlora.sweep.search).
"""

from pathlib import Path

from kdlora.commands._sweep_options import add_sweep_arguments, sweep_from_args
from kdlora.errors import UserError
from kdlora.experiment import load_experiment
from kdlora.store import Store, default_db_path, writable_store
from kdlora.sweep.backends import get_backends
from kdlora.sweep.driver import check_data
from kdlora.sweep.executors import local_jobs, make_executor
from kdlora.sweep.expand import expand
from kdlora.sweep.search import check_space, run_search
from kdlora.trial import optuna_module

HELP = "run an experiment grid (train and bench runs) into the results store, resumably"


def add_arguments(parser) -> None:
    parser.add_argument("experiment", metavar="EXP", help="experiment TOML file, or a bundled name: default, paper")
    add_sweep_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their stored status; run nothing")
    parser.add_argument("--search", choices=("optuna",),
                        help="search the experiment's [search] ranges instead of running its grid (extra `search`)")
    parser.add_argument("--trials", type=int, metavar="N", help="--search: how many trials to finish")
    parser.add_argument("--search-seed", type=int, default=0, metavar="S",
                        help="--search: the sampler's seed (the same seed picks the same trials)")
    parser.add_argument("--no-prune", dest="prune", action="store_false",
                        help="--search: never stop a trial's run early on its dev evaluations")


def run(args) -> int:
    experiment = load_experiment(args.experiment)
    if args.search:
        return 0 if _search(args, experiment).ok else 1
    if args.trials is not None:
        raise UserError("--trials applies to --search optuna")
    if args.dry_run:
        return _dry_run(experiment, args.db)
    return 0 if sweep_from_args(args, experiment).ok else 1


def _search(args, experiment):
    """`--search optuna`: the search with the executor and options of `args`, into `args.db`, after checking them,
    the search space and the experiment's data (a refused search leaves no store or study behind); returns its
    summary."""
    if args.trials is None or args.trials < 1:
        raise UserError("--search optuna needs --trials N (N >= 1)")
    if experiment.train is None or experiment.search is None:
        raise UserError(f"{experiment.source}: --search needs a [train] and a [search] section")
    optuna_module()
    backends = get_backends()
    executor = make_executor(args.executor, args.address, local_jobs(args.jobs, experiment, args.executor),
                             args.warm_start)
    check_space(experiment, backends)
    check_data(experiment, backends)
    with writable_store(args.db) as store:
        summary = run_search(experiment, store, executor, backends, args.trials, args.search_seed, args.prune,
                             args.runs_dir, args.progress)
    print(f"search {experiment.name}: {summary.line()}")
    return summary


def _dry_run(experiment, db) -> int:
    specs = expand(experiment, get_backends())
    statuses = {}
    if Path(db or default_db_path()).exists():
        with Store(db, readonly=True) as store:
            statuses = store.statuses()
    for spec in specs:
        print(f"{spec.key[:12]}  {statuses.get(spec.key, 'new'):9}  {spec.label}")
    print(f"{len(specs)} runs")
    return 0
