"""Write the report of the results store: Table I (median and mean ± std over seeds, GLUE score, beside the
paper's), Table II from the bench runs (with the `kdlora analyze` report beside the paper's), and the trade-off —
what share of LoRA's and FFT's score KD-LoRA keeps at what memory and speed — with Pareto plots.

  kdlora report --out reports/
  kdlora report --experiment my-grid.toml     # only that experiment's runs
  kdlora report --select top-k-median --k 6   # the paper's protocol over a grid of configurations
"""

from kdlora.analysis.select import Selection
from kdlora.commands._sweep_options import add_db_argument
from kdlora.experiment import load_experiment
from kdlora.settings import add_settings_arguments, settings_from_args
from kdlora.store import Store
from kdlora.sweep.backends import get_backends
from kdlora.sweep.expand import expand

HELP = "write the quality / efficiency / trade-off report of the results store"


def add_arguments(parser) -> None:
    add_db_argument(parser)
    parser.add_argument("--out", default="reports", metavar="DIR", help="output folder (default: reports/)")
    parser.add_argument("--experiment", metavar="EXP",
                        help="report only the runs of this experiment (file or bundled name); default: every run")
    add_selection_arguments(parser)


def add_selection_arguments(parser) -> None:
    """--select, --k, --select-epoch, --exclude-flagged: the `Selection` fields, their docstrings the help."""
    add_settings_arguments(parser, Selection)


def selection_from_args(args):
    return Selection(**settings_from_args(Selection, args))


def run(args) -> int:
    from kdlora.analysis.store_report import write_study_report

    keys, title = None, "KD-LoRA results"
    with Store(args.db, readonly=True) as store:
        if args.experiment:
            experiment = load_experiment(args.experiment)
            keys = [s.key for s in expand(experiment, get_backends())]
            title = f"KD-LoRA results: experiment {experiment.name}"
        write_study_report(store, args.out, keys=keys, title=title, selection=selection_from_args(args))
    print(f"report: {args.out}/report.md")
    return 0
