"""One run of `benchmarks/peers.py` in a process of its own: `python benchmarks/peer_runs.py SPEC_JSON RESULT`.

It trains one `Spec` through the HF Trainer + PEFT (configurations `trainer-defaults` and `trainer-best`) or through
kdlora's Python API (`kdlora`) and writes its figures to RESULT as JSON: the training loop's seconds, examples,
dev accuracy (best and last epoch), trainable parameters and, for KD-LoRA, the teacher logits' seconds. What the
configurations are, and why they are fair to each other, is `peers.py`'s docstring. Only light imports at the top:
each configuration's process pays for its own libraries.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kdlora.methods import get_method

RUN_GLUE_MAX_SEQ_LENGTH = 128
RUN_GLUE_EVAL_BATCH = 8
"""run_glue.py's defaults: `max_seq_length` (every example padded to it) and `per_device_eval_batch_size`."""


@dataclass
class Spec:
    """One run: what a child process trains and how."""

    config: str
    """`kdlora`, `trainer-defaults` or `trainer-best`."""
    method: str
    seed: int
    out: str
    """The run's folder (kdlora's run folder, or the Trainer's output_dir)."""
    task: str
    family: str
    epochs: int
    batch_size: int
    max_length: int
    """Truncation of `kdlora` and `trainer-best`; `trainer-defaults` pads every example to run_glue's 128."""
    precision: str
    """fp32 or bf16 (the Trainer's `bf16=True`, kdlora's `--precision bf16`)."""
    max_train_samples: int | None
    data_dir: str | None = None
    tiny: bool = False
    teacher: str | None = None
    """KD-LoRA: kdlora's FFT run folder of the same seed."""
    group_by_length: bool = False
    """kdlora: batches of similar length (`--group-by-length`), as the Trainer at its best."""


def learning_rate(method: str, task) -> float:
    """kdlora's default peak learning rate of `method` on `task` (small data or GLUE-sized)."""
    return get_method(method).learning_rates["small" if task.small_data else "glue"]


def _trainer_model(spec: Spec, task):
    """(model, tokenizer) as a Trainer script builds it: the pretrained teacher (or a tiny build), or the student cut
    from the FFT teacher run; PEFT LoRA with kdlora's settings on the attention's query and value."""
    from peft import LoraConfig, TaskType, get_peft_model

    from kdlora.data.encode import tiny_tokenizer
    from kdlora.families import get_family
    from kdlora.methods.lora import LoraSettings
    from kdlora.modeling import adaptation, default_source, derive_student, load_pretrained
    from kdlora.train.start import load_teacher

    method, family = get_method(spec.method), get_family(spec.family)
    missing = ()
    if method.role == "student":
        teacher, tokenizer = load_teacher(spec.teacher, task)
        model = derive_student(teacher)
    elif spec.tiny:
        model, tokenizer = family.teacher.build(task.num_labels, tiny=True), tiny_tokenizer()
    else:
        model, tokenizer, missing = load_pretrained(default_source(family.teacher), task.num_labels, family.teacher)
    if method.uses_lora:
        lora, where = LoraSettings(), adaptation(model, missing)
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
            target_modules=list(where.lora_targets), modules_to_save=list(where.head_modules)))
    return model.train(), tokenizer


def trainer_run(spec: Spec) -> dict:
    """Train `spec` with the HF Trainer (configurations a and b)."""
    import numpy as np
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    from kdlora.data.loaders import load_split
    from kdlora.data.tasks import get_task
    from kdlora.hf import DistillationTrainer, teacher_logits

    defaults = spec.config == "trainer-defaults"
    task = get_task(spec.task)
    examples = {"train": load_split(task, "train", spec.data_dir).subset(spec.max_train_samples, spec.seed),
                "dev": load_split(task, task.dev_splits[0], spec.data_dir)}
    raw = {name: Dataset.from_dict({"idx": ex.ids, "sentence": [t[0] for t in ex.texts],
                                    "label": [int(v) for v in ex.labels]}) for name, ex in examples.items()}
    set_seed(spec.seed)
    model, tokenizer = _trainer_model(spec, task)
    length = RUN_GLUE_MAX_SEQ_LENGTH if defaults else spec.max_length
    padding = "max_length" if defaults else False
    data = {name: d.map(lambda rows: tokenizer(rows["sentence"], truncation=True, max_length=length,
                                               padding=padding), batched=True) for name, d in raw.items()}
    args = TrainingArguments(
        output_dir=spec.out, per_device_train_batch_size=spec.batch_size, num_train_epochs=spec.epochs,
        per_device_eval_batch_size=RUN_GLUE_EVAL_BATCH if defaults else max(64, spec.batch_size),
        learning_rate=learning_rate(spec.method, task), weight_decay=0.01, warmup_steps=0.1, seed=spec.seed,
        bf16=spec.precision == "bf16", use_cpu=True, eval_strategy="epoch", save_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True,
        train_sampling_strategy="random" if defaults else "group_by_length")

    def accuracy(prediction):
        return {"accuracy": float(np.mean(np.argmax(prediction.predictions, -1) == prediction.label_ids))}

    common = dict(model=model, args=args, train_dataset=data["train"], eval_dataset=data["dev"],
                  processing_class=tokenizer, compute_metrics=accuracy)
    teacher_seconds = None
    if get_method(spec.method).distills:
        started = time.perf_counter()
        table = teacher_logits(spec.teacher, raw["train"], ("sentence",), task=task.name, max_length=length)
        teacher_seconds = time.perf_counter() - started
        trainer = DistillationTrainer(**common, teacher=table)
    else:
        trainer = Trainer(**common, **({"data_collator": default_data_collator} if defaults else {}))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(spec.out)
    scores = [e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e]
    return {"train_seconds": seconds, "train_examples": len(examples["train"]), "dev": max(scores),
            "dev_last": scores[-1], "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "teacher_logit_seconds": teacher_seconds}


def kdlora_run(spec: Spec) -> dict:
    """Train `spec` with kdlora's Python API (configuration c)."""
    from kdlora.api import train_run

    given = dict(task=spec.task, family=spec.family, seed=spec.seed, epochs=spec.epochs, batch_size=spec.batch_size,
                 max_length=spec.max_length, max_train_samples=spec.max_train_samples, precision=spec.precision,
                 data_dir=spec.data_dir, tiny=spec.tiny, teacher=spec.teacher, device="cpu",
                 group_by_length=spec.group_by_length or None)
    result = train_run(spec.out, spec.method, **{k: v for k, v in given.items() if v is not None})
    return {"train_seconds": result.train_seconds, "train_examples": result.train_examples, "dev": result.score,
            "dev_last": result.last_score, "trainable_params": result.trainable_params,
            "teacher_logit_seconds": result.teacher_logit_seconds if result.teacher_logits else None}


def main(argv: list[str]) -> int:
    """Train the spec `argv[0]` (JSON), write its figures to the file `argv[1]`."""
    spec = Spec(**json.loads(argv[0]))
    figures = kdlora_run(spec) if spec.config == "kdlora" else trainer_run(spec)
    Path(argv[1]).write_text(json.dumps(figures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
