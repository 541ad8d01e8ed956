"""Write the report of the results store: Table I (median and mean ± std over seeds, GLUE score, beside the
paper's), Table II from the bench runs (with the `kdlora analyze` report beside the paper's), and the trade-off —
what share of LoRA's and FFT's score KD-LoRA keeps at what memory and speed — with Pareto plots.

  kdlora report --out reports/
  kdlora report --experiment my-grid.toml     # only that experiment's runs
  kdlora report --select top-k-median --k 6   # the paper's protocol over a grid of configurations
"""

HELP = "write the quality / efficiency / trade-off report of the results store"


def add_arguments(parser) -> None:
    from kdlora.commands._sweep_options import add_db_argument

    add_db_argument(parser)
    parser.add_argument("--out", default="reports", metavar="DIR", help="output folder (default: reports/)")
    parser.add_argument("--experiment", metavar="EXP",
                        help="report only the runs of this experiment (file or bundled name); default: every run")
    add_selection_arguments(parser)


def add_selection_arguments(parser) -> None:
    """--select, --k, --select-epoch, --exclude-flagged: the `Selection` fields, their docstrings the help."""
    from kdlora.analysis.select import Selection
    from kdlora.settings import add_settings_arguments

    add_settings_arguments(parser, Selection)


def selection_from_args(args):
    from kdlora.analysis.select import Selection
    from kdlora.settings import settings_from_args

    return Selection(**settings_from_args(Selection, args))


def run(args) -> int:
    from kdlora.analysis.store_report import write_study_report
    from kdlora.store import Store

    keys, title = None, "KD-LoRA results"
    with Store(args.db, readonly=True) as store:
        if args.experiment:
            from kdlora.experiment import load_experiment
            from kdlora.sweep.backends import get_backends
            from kdlora.sweep.expand import expand

            experiment = load_experiment(args.experiment)
            keys = [s.key for s in expand(experiment, get_backends())]
            title = f"KD-LoRA results: experiment {experiment.name}"
        write_study_report(store, args.out, keys=keys, title=title, selection=selection_from_args(args))
    print(f"report: {args.out}/report.md")
    return 0
