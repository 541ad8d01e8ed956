"""Export a trained run as one plain transformers model: LoRA adapters merged into the weights.

Beside the model, `export.json` says what it is (task, format, max length, the run it came from) and is the
folder's manifest (each file's size and sha256, see `kdlora.files`), so a reader can check the export is whole.
"""

from __future__ import annotations

from pathlib import Path

from kdlora.files import read_manifest, staged_output, unreadable_is_damage, verify, write_manifest

EXPORT_INFO = "export.json"
WHAT = "exported model"


def export_run(run_dir: str | Path, out_dir: str | Path, verify: bool = True) -> Path:
    """Write the run's model, adapters merged, with its tokenizer, label names and manifest into `out_dir`; the
    run folder is checked against its manifest first unless `verify` is False.

    `AutoModelForSequenceClassification.from_pretrained(out_dir)` loads it without PEFT or kdlora.
    """
    from kdlora.data.tasks import get_task
    from kdlora.rundir import check_run, load_config, load_model, load_tokenizer

    info = check_run(run_dir, verify)
    config = load_config(run_dir)
    model, tokenizer = load_model(run_dir, merged=True, info=info), load_tokenizer(run_dir)
    names = get_task(config.task).label_names
    if names and len(names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(names))
        model.config.label2id = {name: i for i, name in enumerate(names)}
    with staged_output(out_dir) as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        write_manifest(stage, EXPORT_INFO, {"task": config.task, "format": "safetensors",
                                            "max_length": config.max_length, "source": str(run_dir)})
    return Path(out_dir)


def check_export(folder: str | Path, verify_files: bool = True) -> dict:
    """export.json of `folder`, after checking every file it lists (unless `verify_files` is False)."""
    if verify_files:  # export.json came with manifests: one without is damaged, not older
        return verify(folder, EXPORT_INFO, WHAT, older_ok=False)
    return read_manifest(folder, EXPORT_INFO, WHAT)


def load_export(folder: str | Path):
    """(model, tokenizer) of a safetensors export; a file they cannot read is a UserError naming the folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with unreadable_is_damage(Path(folder), WHAT, WHAT):
        return AutoModelForSequenceClassification.from_pretrained(str(folder)).eval(), \
            AutoTokenizer.from_pretrained(str(folder))
