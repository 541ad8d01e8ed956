"""KD-LoRA in a plain Hugging Face Trainer script: copy it and change what you need.

    python examples/trainer_kd.py --model MODEL --teacher runs/fft --student derive:3 \
        --train_file train.csv --validation_file dev.csv --text_columns review --label_column verdict \
        --rank 8 --output_dir out --num_train_epochs 3 --learning_rate 5e-4 --eval_strategy epoch

The teacher is a `kdlora train --method fft` run folder or any fine-tuned sequence-classification checkpoint; its
logits are computed once and cached by kdlora (`--online_teacher`: run per batch instead). The student is a model
name or folder, or `derive:N`: N evenly spaced layers of --model (the way DistilBERT was cut from BERT). Classes
are the training file's label values numbered as `kdlora train` numbers them (`kdlora.data.file_tasks.class_names`:
numbers by value, words alphabetically), so a kdlora teacher's logits line up with the student's labels.
Every `TrainingArguments` flag works (`--bf16`, `--gradient_accumulation_steps`, `--report_to`, ...).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import load_dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser, TrainingArguments

from kdlora.data.file_tasks import class_names, label_text
from kdlora.hf import DistillationTrainer, teacher_logits
from kdlora.modeling import adaptation, derive_student, parse_student


@dataclass
class ScriptArguments:
    model: str
    """The encoder the teacher was fine-tuned from: its tokenizer, and the layers `--student derive:N` keeps."""
    teacher: str
    """A kdlora FFT run folder or a fine-tuned sequence-classification checkpoint."""
    train_file: str
    validation_file: str
    text_columns: str = "sentence"
    """One column, or two separated by a comma (a sentence pair)."""
    label_column: str = "label"
    student: str = "derive:3"
    """A model name or folder, or derive:N (N layers of --model)."""
    max_length: int = 128
    online_teacher: bool = False
    """Run the teacher on every batch instead of caching its logits once."""
    temperature: float = 2.0
    kd_alpha: float = 0.5
    """loss = kd_alpha * KD + (1 - kd_alpha) * cross-entropy."""


@dataclass
class LoraArguments:
    rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: str | None = None
    """Comma list of module names; default: the attention's query and value projections."""


def numbered_classes(data, label_column: str, train_file: str):
    """(class names in id order, `data` with `label` as class ids and `idx` as row ids), classes numbered from the
    training split as `kdlora train` numbers them."""
    classes = class_names(data["train"][label_column], f"{train_file}: column {label_column!r}")
    ids = {name: i for i, name in enumerate(classes)}
    return classes, data.map(lambda row, i: {"label": ids[label_text(row[label_column])], "idx": i},
                             with_indices=True)


def main(argv=None):
    parser = HfArgumentParser((ScriptArguments, LoraArguments, TrainingArguments))
    script, lora, training = parser.parse_args_into_dataclasses(argv)
    columns = [c.strip() for c in script.text_columns.split(",")]
    kind = {".jsonl": "json", ".tsv": "csv"}.get(Path(script.train_file).suffix, Path(script.train_file).suffix[1:])
    data = load_dataset(kind, data_files={"train": script.train_file, "validation": script.validation_file},
                        **({"delimiter": "\t"} if script.train_file.endswith(".tsv") else {}))
    classes, data = numbered_classes(data, script.label_column, script.train_file)
    teacher = teacher_logits(script.teacher, data["train"], columns, max_length=script.max_length,
                             online=script.online_teacher)

    tokenizer = AutoTokenizer.from_pretrained(script.model)
    tokenized = data.map(lambda rows: tokenizer(*[rows[c] for c in columns], truncation=True,
                                                max_length=script.max_length), batched=True)
    keep = parse_student(script.student)
    source = keep if isinstance(keep, str) else script.model
    student = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(classes))
    if isinstance(keep, int | tuple):
        student = derive_student(student, keep)
    where = adaptation(student, targets=lora.lora_targets)  # kdlora finds the attention projections and the head
    student = get_peft_model(student, LoraConfig(
        task_type=TaskType.SEQ_CLS, r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
        target_modules=list(where.lora_targets), modules_to_save=list(where.head_modules)))

    def accuracy(prediction):
        return {"accuracy": float(np.mean(np.argmax(prediction.predictions, -1) == prediction.label_ids))}

    trainer = DistillationTrainer(model=student, args=training, train_dataset=tokenized["train"],
                                  eval_dataset=tokenized["validation"], processing_class=tokenizer,
                                  teacher=teacher, temperature=script.temperature, alpha=script.kd_alpha,
                                  compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    print(f"dev accuracy {metrics['eval_accuracy']:.4f} (loss {metrics['eval_loss']:.4f}); teacher logits: "
          f"{getattr(teacher, 'source', 'online')}")
    trainer.save_model(training.output_dir)
    return metrics


if __name__ == "__main__":
    main()
