"""Expand an experiment file into runs and execute those the results store does not hold as done.

EXP is a TOML file or a bundled experiment (`default`, `paper`). FFT teachers run before the KD-LoRA runs that
distil them; a sweep interrupted at any point resumes where it stopped when run again (finished runs are kept,
the interrupted one reruns). Failed runs are kept as failed until `--rerun-failed`.

  kdlora sweep my-grid.toml
  kdlora sweep paper --executor ray --address auto
  kdlora sweep my-grid.toml --dry-run        # list the runs and their status, run nothing
"""

HELP = "run an experiment grid (train and bench runs) into the results store, resumably"


def add_arguments(parser) -> None:
    from kdlora.commands._sweep_options import add_sweep_arguments

    parser.add_argument("experiment", metavar="EXP", help="experiment TOML file, or a bundled name: default, paper")
    add_sweep_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their stored status; run nothing")


def run(args) -> int:
    from kdlora.commands._sweep_options import sweep_from_args
    from kdlora.experiment import load_experiment
    from kdlora.store import Store

    experiment = load_experiment(args.experiment)
    if args.dry_run:
        return _dry_run(experiment, args.db)
    with Store(args.db) as store:
        summary = sweep_from_args(args, experiment, store)
    return 0 if summary.ok else 1


def _dry_run(experiment, db) -> int:
    from pathlib import Path

    from kdlora.backends import get_backends
    from kdlora.store import Store, default_db_path
    from kdlora.sweep import expand

    specs = expand(experiment, get_backends())
    statuses = {}
    if Path(db or default_db_path()).exists():
        with Store(db, readonly=True) as store:
            statuses = store.statuses()
    for spec in specs:
        print(f"{spec.key[:12]}  {statuses.get(spec.key, 'new'):9}  {spec.label}")
    print(f"{len(specs)} runs")
    return 0
