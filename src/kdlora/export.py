"""Export a trained run as one plain transformers model: LoRA adapters merged into the weights."""

from __future__ import annotations

from pathlib import Path

from kdlora.files import staged_output


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the run's model, adapters merged, with its tokenizer and label names into `out_dir`.

    `AutoModelForSequenceClassification.from_pretrained(out_dir)` loads it without PEFT or kdlora.
    """
    from kdlora.data.tasks import get_task
    from kdlora.rundir import load_config, load_model, load_tokenizer

    config = load_config(run_dir)
    model, tokenizer = load_model(run_dir, merged=True), load_tokenizer(run_dir)
    names = get_task(config.task).label_names
    if names and len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}
    with staged_output(out_dir) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
    return Path(out_dir)
