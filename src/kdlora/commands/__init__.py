"""One module per subcommand. Each defines HELP, add_arguments(parser) and run(args) -> int.

Command modules stay light at import time (no torch, no transformers, no numpy or scipy): the CLI imports all
of them to build its help, and `kdlora analyze` must start in about a second. The package's modules they use are
imported at the top, but for those that load numpy or scipy (`kdlora.predict`, `kdlora.export`, the study report
`kdlora.analysis.store_report`): a command imports these where it needs them.
"""
