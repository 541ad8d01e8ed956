"""The `kdlora` command line: one subcommand per module in `kdlora.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from kdlora import __version__, commands
from kdlora.errors import UserError
from kdlora.methods import check_plugins


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits with code 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def command_modules() -> dict:
    """Every subcommand module, by command name (module `data_fetch` is command `data-fetch`)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        found[info.name.replace("_", "-")] = importlib.import_module(f"kdlora.commands.{info.name}")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdlora", description="Fine-tune BERT-family encoders by FFT, LoRA and KD-LoRA, "
                     "measure what each costs, and report it.")
    parser.add_argument("--version", action="version", version=f"kdlora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in command_modules().items():
        doc = (module.__doc__ or "").strip()
        cmd = sub.add_parser(name, help=module.HELP, description=doc or module.HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        check_plugins()  # a method module $KDLORA_METHODS names is missing: say so before any command
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"kdlora {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`kdlora runs | head`): not an error of ours; silence the flush at exit too
        sys.stdout = None
        return 0
    except KeyboardInterrupt:
        print(f"kdlora {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
