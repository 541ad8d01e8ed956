"""List the runs in the results store, newest last, filtered by kind, task, family, method, rank, seed or status.

  kdlora runs
  kdlora runs --status failed --format json
  kdlora runs --kind train --method kd-lora --format csv > kd.csv
"""

import csv
import json
import sys

from kdlora.commands._sweep_options import add_db_argument
from kdlora.methods import get_method
from kdlora.store import KINDS, READ_STATUSES, Store

HELP = "list the runs in the results store (table, json or csv)"

FORMATS = ("table", "json", "csv")


def add_arguments(parser) -> None:
    add_db_argument(parser)
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--kind", choices=KINDS, help="only train or only bench runs")
    parser.add_argument("--status", choices=READ_STATUSES, help="only runs with this status")
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--family", help="only this model family")
    parser.add_argument("--method", help="only this method (fft, lora, kd-lora)")
    parser.add_argument("--rank", type=int, help="only this LoRA rank")
    parser.add_argument("--seed", type=int, help="only this seed")


def run(args) -> int:
    method = None
    if args.method:
        method = get_method(args.method).name
    with Store(args.db, readonly=True) as store:
        runs = store.runs(kind=args.kind, status=args.status, task=args.task, family=args.family, method=method,
                          rank=args.rank, seed=args.seed)
    rows = [r.summary() for r in runs]
    if args.format == "json":
        json.dump([{**r.summary(), "key": r.key, "config": r.config, "metrics": r.metrics} for r in runs],
                  sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        columns = list(rows[0]) if rows else list(_EMPTY)
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from tabulate import tabulate

        if rows:
            shown = [{k: _short(v) for k, v in r.items() if k not in ("finished_at",)} for r in rows]
            print(tabulate(shown, headers="keys", floatfmt=".4g"))
        print(f"{len(rows)} runs in {store.path}")
    return 0


_EMPTY = ("key", "kind", "status", "task", "family", "method", "rank", "seed", "score", "trainable_params",
          "peak_memory_mb", "seconds", "finished_at", "reason", "flags")


def _short(value):
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "..."
    return "" if value is None else value
