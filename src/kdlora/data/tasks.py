"""The task table: GLUE's nine tasks and the two offline movie-snippet tasks (a user's own files make a task in
`kdlora.data.file_tasks`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kdlora.errors import UserError


@dataclass(frozen=True)
class Task:
    """One text-classification (or regression) task and how to read and score it."""

    name: str
    text_fields: tuple[str, ...]
    """Column names of the one or two input texts (the hub's names)."""
    num_labels: int
    """Classes; 1 for a regression head."""
    metric: str
    """Headline metric: `accuracy`, `mcc`, `accuracy_f1` (mean of the two), `f1`, `macro_f1` or
    `pearson_spearman` (mean)."""
    label_names: tuple[str, ...] = ()
    """Class names in label order (printed by `kdlora predict`)."""
    label_range: tuple[float, float] | None = None
    """Allowed label values of a regression task."""
    dev_splits: tuple[str, ...] = ("validation",)
    """Dev splits scored after each epoch; MNLI has matched and mismatched."""
    source: str = "glue"
    """`glue` (hub `nyu-mll/glue` or local GLUE files), `snippets` (the offline movie-review snippets) or `files`."""
    tsv: dict = field(default_factory=dict)
    """How the original GLUE TSV files name the columns: text fields, label column, header or not."""
    small_data: bool = False
    """A few thousand examples: the per-method default learning rates are higher (see TrainConfig)."""
    files: object = None
    """A task from the user's files (`source` "files"): a `kdlora.data.file_tasks.FileTaskSpec`."""
    positive_class: int = 1
    """The class id that binary F1 counts as positive (GLUE's: 1; a file task's: --positive-label)."""

    @property
    def positive_label(self) -> str | None:
        """The name of F1's positive class, for tasks scored by F1 (None for the others)."""
        if self.metric not in ("f1", "accuracy_f1"):
            return None
        return self.label_names[self.positive_class] if self.label_names else str(self.positive_class)

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


def _tsv(texts, label, header=True, labels=None, names=None):
    return {"texts": texts, "label": label, "header": header, "labels": labels, "names": names}


_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("cola", ("sentence",), 2, "mcc", ("unacceptable", "acceptable"),
             tsv=_tsv((3,), 1, header=False)),
        Task("sst2", ("sentence",), 2, "accuracy", ("negative", "positive"), tsv=_tsv(("sentence",), "label")),
        Task("mrpc", ("sentence1", "sentence2"), 2, "accuracy_f1", ("not_equivalent", "equivalent"),
             tsv=_tsv(("#1 String", "#2 String"), "Quality")),
        Task("qqp", ("question1", "question2"), 2, "accuracy_f1", ("not_duplicate", "duplicate"),
             tsv=_tsv(("question1", "question2"), "is_duplicate")),
        Task("stsb", ("sentence1", "sentence2"), 1, "pearson_spearman", label_range=(0.0, 5.0),
             tsv=_tsv(("sentence1", "sentence2"), "score")),
        Task("mnli", ("premise", "hypothesis"), 3, "accuracy", _NLI3,
             dev_splits=("validation_matched", "validation_mismatched"),
             tsv=_tsv(("sentence1", "sentence2"), "gold_label", labels=_NLI3,
                      names={"validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched"})),
        Task("qnli", ("question", "sentence"), 2, "accuracy", _NLI2,
             tsv=_tsv(("question", "sentence"), "label", labels=_NLI2)),
        Task("rte", ("sentence1", "sentence2"), 2, "accuracy", _NLI2,
             tsv=_tsv(("sentence1", "sentence2"), "label", labels=_NLI2)),
        Task("wnli", ("sentence1", "sentence2"), 2, "accuracy", ("not_entailment", "entailment"),
             tsv=_tsv(("sentence1", "sentence2"), "label")),
        Task("movie-snippets", ("sentence",), 2, "accuracy", ("negative", "positive"), source="snippets",
             small_data=True),
        Task("movie-snippets-rating", ("sentence",), 1, "pearson_spearman", label_range=(-4.0, 4.0),
             source="snippets", small_data=True),
    )
}

GLUE_TASKS = tuple(name for name, t in TASKS.items() if t.source == "glue")


def get_task(name: str) -> Task:
    """The task called `name` (`SST-2` and `sst_2` are accepted too), or a UserError listing the known ones."""
    key = name.strip().lower().replace("_", "-")
    key = {"sst-2": "sst2", "sts-b": "stsb"}.get(key, key)
    try:
        return TASKS[key]
    except KeyError:
        raise UserError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None
