"""Settings dataclasses as command-line flags and plain values: one flag builder for every settings class.

A settings class is a dataclass whose fields each carry a docstring (the string under the field in the class
body): that docstring is the flag's `--help`, so the two never diverge. `add_settings_arguments` makes one `--flag`
per field of one or more classes (a training run's flags come from its run settings and every registered method's
settings); `settings_from_args` reads back what the command line set; `coerce` turns a value read from a file
(TOML, JSON, YAML) into the field's type or a UserError naming the key. Each class validates itself once, when it
is made (`__post_init__`): the edge.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from typing import get_type_hints

from kdlora.errors import UserError


def field_docs(*classes) -> dict[str, str]:
    """Each dataclass field's docstring, for the fields of `classes` and of their dataclass bases."""
    docs = {}
    for cls in classes:
        for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
            names = {f.name for f in dataclasses.fields(klass)}  # not a ClassVar's
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
            for node, after in zip(body, body[1:], strict=False):
                if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and \
                        isinstance(after.value, ast.Constant) and node.target.id in names:
                    docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def field_hints(*classes) -> dict[str, object]:
    """Each field's type hint, for the fields of `classes`."""
    hints = {}
    for cls in classes:
        hints.update(get_type_hints(cls))
    return hints


def field_default(f: dataclasses.Field):
    """A field's default value (its factory's product), or None for a required field."""
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def count_or_word(text: str) -> int | str:
    """A field typed `int | str` read from text: a count as an int (`2000`), any other text as it is (`all`)."""
    return int(text) if text.strip().isdigit() else text.strip()


def coerce(key: str, value, hint):
    """`value` as the field's type (bool, int, float, str, `int | str`, or None where allowed), else a
    UserError."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise UserError(f"config: {key} may not be empty")
    if "int" in text and "str" in text:  # a count or a word: `transfer_samples = 2000` or `"all"`
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise UserError(f"config: {key} must be a whole number or a word, got {value!r}")
        return value if isinstance(value, int) else count_or_word(value)
    for kind in (bool, int, float, str):
        if kind.__name__ in text.replace("None", ""):
            break
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"config: {key} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise UserError(f"config: {key} must be a number, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"config: {key} must be {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise UserError(f"config: {key} must be a whole number, got {value!r}")
    return converted


def _comma_list(kind):
    """An argparse type: `a,b,c` as a tuple of `kind`."""
    def parse(text: str) -> tuple:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return tuple(kind(part) for part in parts)
        except ValueError:
            words = {int: "integers", float: "numbers"}.get(kind, "names")
            raise argparse.ArgumentTypeError(f"must be {words} separated by commas, got {text!r}") from None
    parse.__name__ = f"comma-separated {kind.__name__}"
    return parse


def add_settings_arguments(parser, *classes, keep_defaults: bool = True, hidden: tuple[str, ...] = (),
                           aliases: dict[str, list[str]] | None = None, retired: dict[str, str] | None = None,
                           choices: dict[str, tuple] | None = None, helps: dict[str, str] | None = None) -> None:
    """Add one `--flag` per field of the settings dataclasses `classes`; each field's docstring is its help.

    keep_defaults: the parser's defaults are the dataclass's; when False every flag defaults to None, so settings
    from a file can fill what the command line left out (`kdlora train --config`). Booleans are `--flag` (and
    `--no-flag` when the default is true); tuples are comma lists; `hidden` fields take no help line; `aliases`
    gives a field more flag names that work but take no help line (the name a field had before); `retired` maps a
    flag that no longer works to its successor (exit 2 naming it); `choices` limits a scalar field to the values
    given; `helps` replaces a field's docstring (help made from a registry).
    """
    docs, hints = field_docs(*classes), field_hints(*classes)
    docs.update(helps or {})
    aliases, choices = aliases or {}, choices or {}
    for flag, successor in (retired or {}).items():
        parser.add_argument(flag, action=_Retired, successor=successor)
    for f in (f for cls in classes for f in dataclasses.fields(cls) if f.init):
        default = field_default(f)
        hint = str(hints[f.name])
        help_text = argparse.SUPPRESS if f.name in hidden else docs.get(f.name, "")
        parser_default = default if keep_defaults else None
        flag = "--" + f.name.replace("_", "-")
        if "bool" in hint:
            action = argparse.BooleanOptionalAction if default is True else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=parser_default, help=help_text)
            for alias in aliases.get(f.name, []):
                parser.add_argument(alias, dest=f.name, action=action, default=parser_default, help=argparse.SUPPRESS)
            continue
        kind = (count_or_word if "int" in hint and "str" in hint else int if "int" in hint else
                float if "float" in hint else str)
        options = {"type": kind, **({"choices": choices[f.name]} if f.name in choices else {})}
        if "tuple" in hint:
            options = {"type": _comma_list(kind), "metavar": "A,B"}
            shown = f" (default: {','.join(map(str, default))})" if default else ""
        else:
            shown = "" if default is None else f" (default: {default})"
        if help_text is not argparse.SUPPRESS:
            help_text = (help_text + shown).replace("%", "%%")
        parser.add_argument(flag, dest=f.name, default=parser_default, help=help_text, **options)
        for alias in aliases.get(f.name, []):
            parser.add_argument(alias, dest=f.name, default=parser_default, help=argparse.SUPPRESS, **options)


class _Retired(argparse.Action):
    """A flag that no longer works: one line naming its successor, exit 2 (argparse's error)."""

    def __init__(self, option_strings, dest, successor: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS)
        self.successor = successor

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was retired: use {self.successor}")


def settings_from_args(names, args: argparse.Namespace, values: dict | None = None) -> dict:
    """The settings called `names` (a settings class: its fields) that `args` sets (not None), over `values`
    (settings read from a file, say)."""
    if dataclasses.is_dataclass(names):
        names = {f.name for f in dataclasses.fields(names)}
    return {**(values or {}), **{k: v for k, v in vars(args).items() if k in names and v is not None}}
