"""One module per subcommand. Each defines HELP, add_arguments(parser) and run(args) -> int.

Command modules stay light at import time (no torch, no transformers): the CLI imports all of them
to build its help, and `kdlora analyze` must start in about a second.
"""
