"""The fine-tuning methods, registered by name: the only list of method names, labels and colours in the toolkit.

A new method is one module here (a `Method` and its settings dataclass, see `base.py`) and one line in
`REGISTERED`. Everything else (the CLI's choices, help and flags, `TrainConfig`'s settings, the sweep, bench, tables,
plots and reports) reads this registry. Light: importing it never imports torch, transformers or peft.

A method outside the package is a module that calls `register(METHOD)`, named in `$KDLORA_METHODS` (comma-separated
module names), imported here after the built-in ones, so that every process (a sweep's child runs, the bench's
workers) knows it; one that cannot be imported is a one-line error of every command (`check_plugins`). It may
bring settings of its own: they enter a run's key only for its own runs, and only away from their defaults, so
registering it changes no stored run's key (`kdlora.config`).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import fields

from kdlora.errors import UserError
from kdlora.methods.adalora import ADALORA, KD_ADALORA, AdaLoraSettings
from kdlora.methods.base import DistillSettings, HiddenDistillSettings, Method, TransferSettings
from kdlora.methods.dora import DORA, KD_DORA
from kdlora.methods.fft import FFT
from kdlora.methods.lora import KD_LORA, LORA, STUDENT_LORA, LoraSettings
from kdlora.methods.lora_plus import KD_LORA_PLUS, LORA_PLUS, LoraPlusSettings
from kdlora.methods.pissa import KD_PISSA, PISSA
from kdlora.methods.vera import KD_VERA, VERA, VeraSettings

REGISTERED = (FFT, LORA, KD_LORA, STUDENT_LORA, DORA, KD_DORA, ADALORA, KD_ADALORA, PISSA, KD_PISSA, LORA_PLUS,
              KD_LORA_PLUS, VERA, KD_VERA)

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to the registry (a name registered twice, or a setting two settings classes both define, is a
    bug)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    owners = {f.name: cls for known in METHODS.values() for cls in known.settings for f in fields(cls)}
    for cls in method.settings:
        clash = next((f.name for f in fields(cls) if owners.get(f.name, cls) is not cls), None)
        if clash is not None:
            raise ValueError(f"method {method.name!r}: setting {clash!r} is already {owners[clash].__name__}'s")
    METHODS[method.name] = method
    return method


for _method in REGISTERED:
    register(_method)

PLUGINS_ENV = "KDLORA_METHODS"
"""Modules to import after the built-in methods, comma-separated; each registers its own method(s)."""


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def get_method(name: str) -> Method:
    """The method called `name` (`kd_lora` and `KD-LoRA` are accepted too), or a UserError."""
    key = _key(name)
    found = METHODS.get(key) or next((m for m in METHODS.values() if _key(m.label) == key), None)
    if found is None:
        why = f"; {PLUGIN_ERROR}" if PLUGIN_ERROR else ""
        raise UserError(f"unknown method {name!r} (known: {', '.join(METHODS)}){why}")
    return found


def by_label(label: str) -> Method | None:
    """The method a table names `label` ("KD-LoRA", "kdlora", "Full Fine-Tuning" for FFT), else None."""
    key = "".join(ch for ch in label.lower() if ch.isalnum())
    aliases = {"fullfinetuning": baseline().name}
    for method in METHODS.values():
        if key in ("".join(ch for ch in m.lower() if ch.isalnum()) for m in (method.name, method.label)):
            return method
    return METHODS.get(aliases.get(key, ""))


def baseline() -> Method:
    """The method every other is set against and distilling methods learn from (full fine-tuning)."""
    return next(m for m in METHODS.values() if m.teaches)


def paper_methods() -> tuple[str, ...]:
    """The paper's methods (FFT, LoRA, KD-LoRA): `kdlora bench`'s default and Table II's rows."""
    return tuple(m.name for m in METHODS.values() if m.in_paper)


def paper_trio() -> tuple[Method, Method, Method]:
    """The paper's three methods as (full fine-tuning, the adapter on the teacher, the adapter on the student with
    KD): FFT, LoRA, KD-LoRA."""
    base = baseline()
    on_teacher, distiller = (next(m for m in METHODS.values() if m.in_paper and m is not base and m.distills == d)
                             for d in (False, True))
    return base, on_teacher, distiller


def twin(method: Method, role: str, distills: bool) -> Method | None:
    """The registered method with `method`'s adapter on the `role` model, distilling or not (None if none)."""
    return next((m for m in METHODS.values() if m.adapter == method.adapter and m.adapter is not None
                 and m.role == role and m.distills == distills), None)


def comparisons() -> list[tuple[Method, Method, Method | None]]:
    """(the adapter on the teacher, on the student with KD, on the student without KD or None) for every
    distilling method whose teacher twin is registered: LoRA / KD-LoRA / Student-LoRA, DoRA / KD-DoRA / None, ..."""
    found = []
    for method in METHODS.values():
        teacher_twin = twin(method, "teacher", False) if method.distills else None
        if teacher_twin is not None:
            found.append((teacher_twin, method, twin(method, "student", False)))
    return found


def labels() -> dict[str, str]:
    """Each method's table label by name, in registration order (FFT, LoRA, KD-LoRA first)."""
    return {m.name: m.label for m in METHODS.values()}


def colour_of(label: str) -> str | None:
    """The plot colour of the method a table or plot names `label` (None for a name no method has)."""
    method = by_label(label)
    return method.colour if method else None


def settings_classes() -> tuple[type, ...]:
    """Every registered method's settings dataclasses, each once, in registration order."""
    return tuple(dict.fromkeys(cls for m in METHODS.values() for cls in m.settings))


__all__ = ["METHODS", "AdaLoraSettings", "DistillSettings", "HiddenDistillSettings", "LoraPlusSettings",
           "LoraSettings", "Method", "TransferSettings", "VeraSettings", "baseline", "by_label", "check_plugins",
           "colour_of", "comparisons", "get_method", "labels", "paper_methods", "paper_trio", "register",
           "settings_classes", "twin"]


PLUGIN_ERROR: str | None = None
"""Why a module `$KDLORA_METHODS` names could not be imported, or None. Importing the registry does not raise (every
command, `kdlora --help` too, imports it): the CLI says it in one line before any command (`check_plugins`), and an
unknown method's error repeats it."""


def check_plugins() -> None:
    """A UserError when a module `$KDLORA_METHODS` names could not be imported."""
    if PLUGIN_ERROR is not None:
        raise UserError(PLUGIN_ERROR)


for _module in filter(None, (part.strip() for part in os.environ.get(PLUGINS_ENV, "").split(","))):
    try:
        importlib.import_module(_module)  # after every helper above exists: the plug-in calls `register`
    except ImportError as exc:
        PLUGIN_ERROR = (f"{PLUGINS_ENV}={os.environ[PLUGINS_ENV]}: cannot import the method module {_module!r} "
                        f"({exc}); fix or unset {PLUGINS_ENV}")
        break
