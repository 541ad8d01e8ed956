"""The model families of KD-LoRA: a teacher, its distilled student, and where LoRA and the task head go.

The six paper architectures ship as config files in `kdlora/configs/`, so they can be built offline with random
weights (efficiency does not depend on weight values); `pretrained=` loads real weights instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from kdlora.errors import UserError


@dataclass(frozen=True)
class Architecture:
    """One encoder: how to build it and which of its modules LoRA adapts or must train."""

    hub_name: str
    """Name on the model hub, e.g. `bert-base-uncased`."""
    display_name: str
    """Name the paper's tables use, e.g. `BERT-base`."""
    config_file: str
    """Bundled config (in `kdlora/configs/`) with the published sizes."""
    lora_targets: tuple[str, ...]
    """Attention query and value projections: the modules LoRA adapts."""
    head_modules: tuple[str, ...]
    """Newly initialised task-head modules: they train under every method (PEFT's modules_to_save)."""

    @property
    def model_type(self) -> str:
        return self.config_dict()["model_type"]

    def config_dict(self) -> dict:
        """The bundled config as a plain dict (no transformers import)."""
        text = resources.files("kdlora.configs").joinpath(self.config_file).read_text(encoding="utf-8")
        return json.loads(text)

    def config(self, num_labels: int = 2, tiny: bool = False, **overrides):
        """A transformers config for this architecture with a `num_labels` head; `tiny` shrinks it for tests."""
        from transformers import AutoConfig

        values = self.config_dict()
        model_type = values.pop("model_type")
        if tiny:
            # keep the teacher/student depth ratio: 12 layers -> 2, 6 -> 1
            depth_key = "n_layers" if "n_layers" in values else "num_hidden_layers"
            values[depth_key] = max(1, values[depth_key] // 6)
            values.update(TINY_SIZES[model_type])
        values.update(overrides)
        config = AutoConfig.for_model(model_type, **values)
        config.num_labels = num_labels
        return config

    def build(self, num_labels: int = 2, pretrained: str | None = None, tiny: bool = False, **overrides):
        """A sequence-classification model: random weights from the bundled config, or `pretrained` weights."""
        from transformers import AutoModelForSequenceClassification

        if pretrained:
            return AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=num_labels,
                                                                      **overrides)
        return AutoModelForSequenceClassification.from_config(self.config(num_labels, tiny, **overrides))


@dataclass(frozen=True)
class Family:
    """A teacher and the student that KD-LoRA distils it into."""

    name: str
    teacher: Architecture
    student: Architecture

    def architecture(self, role: str) -> Architecture:
        """The teacher or the student (`role` is "teacher" or "student")."""
        return {"teacher": self.teacher, "student": self.student}[role]


# Small sizes per model type for tests and smoke runs: same code paths, seconds instead of minutes.
TINY_SIZES = {
    "bert": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                 vocab_size=1000, max_position_embeddings=128),
    "roberta": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                    vocab_size=1000, max_position_embeddings=130),
    "distilbert": dict(dim=32, n_heads=2, hidden_dim=64, vocab_size=1000,
                       max_position_embeddings=128),
    "deberta-v2": dict(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                       vocab_size=1000, pooler_hidden_size=32, position_buckets=16,
                       max_position_embeddings=128),
}

_BERT_QV = ("query", "value")
_DEBERTA_QV = ("query_proj", "value_proj")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "bert",
            Architecture("bert-base-uncased", "BERT-base", "bert-base-uncased.json", _BERT_QV, ("classifier",)),
            Architecture("distilbert-base-uncased", "DistilBERT-base", "distilbert-base-uncased.json",
                         ("q_lin", "v_lin"), ("pre_classifier", "classifier")),
        ),
        Family(
            "roberta",
            Architecture("roberta-base", "RoBERTa-base", "roberta-base.json", _BERT_QV, ("classifier",)),
            Architecture("distilroberta-base", "DistilRoBERTa-base", "distilroberta-base.json", _BERT_QV,
                         ("classifier",)),
        ),
        Family(
            "deberta",
            Architecture("microsoft/deberta-v3-base", "DeBERTa-v3-base", "deberta-v3-base.json", _DEBERTA_QV,
                         ("pooler", "classifier")),
            Architecture("microsoft/deberta-v3-small", "DeBERTa-v3-small", "deberta-v3-small.json",
                         _DEBERTA_QV, ("pooler", "classifier")),
        ),
    )
}


def get_family(name: str) -> Family:
    """The registered family called `name`, or a UserError listing the known ones."""
    try:
        return FAMILIES[name.strip().lower()]
    except KeyError:
        raise UserError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})") from None
