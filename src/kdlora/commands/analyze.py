"""Write the efficiency analysis of a Table II CSV: report.md, analysis.json and five plots in efficiency_plots/.

The table has columns Model, Method (FFT, LoRA, KD-LoRA), one `Rank N` per LoRA rank (trainable parameters),
Memory Usage and Inference Time, and optionally Model Family. Cells may carry units (110M, 1,332 MB, 1.3 GiB,
850 ms). With a reference table (e.g. the paper's, --paper-reference) the report sets its figures beside this
table's, cell by cell.

examples:
  kdlora analyze --paper --out report/
  kdlora analyze bench/table-ii.csv --paper-reference --out report/
"""

from __future__ import annotations

import contextlib
from importlib import resources

from kdlora.analysis.paper import paper_table
from kdlora.analysis.report import write_report
from kdlora.errors import UserError

HELP = "efficiency report (markdown, JSON, plots) from a Table II CSV"


def add_arguments(parser) -> None:
    parser.add_argument("table", nargs="?", metavar="TABLE.csv", help="the Table II CSV to analyse")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, analysis.json and "
                        "efficiency_plots/ (created; same-named entries are replaced only when all is written)")
    parser.add_argument("--paper", action="store_true", help="analyse the paper's Table II (bundled)")
    parser.add_argument("--reference", metavar="REF.csv", help="a Table II to compare against, cell by cell "
                        "(taken as the reported figures)")
    parser.add_argument("--paper-reference", action="store_true", help="compare against the paper's Table II")


def run(args) -> int:
    if (args.table is None) == (not args.paper):
        raise UserError("give either TABLE.csv or --paper")
    if args.reference and args.paper_reference:
        raise UserError("give either --reference or --paper-reference")
    paper = paper_table("ii")
    with contextlib.ExitStack() as stack:
        bundled = stack.enter_context(resources.as_file(paper)) if args.paper or args.paper_reference else None
        write_report(bundled if args.paper else args.table, args.out,
                     bundled if args.paper_reference else args.reference)
    print(f"{args.out.rstrip('/')}/report.md")
    return 0
