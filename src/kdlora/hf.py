"""KD-LoRA inside a Hugging Face `Trainer` script: a collator that keeps each example's id, and a Trainer whose loss
is `kdlora.distill.kd_loss` against the teacher's logits for those ids.

    dataset = dataset.add_column("idx", list(range(len(dataset))))        # the id each teacher row is found by
    teacher = teacher_logits("runs/fft", dataset, text_columns=("sentence",))   # kdlora's teacher-logit cache
    trainer = DistillationTrainer(model=peft_model, args=TrainingArguments(...), train_dataset=tokenized,
                                  processing_class=tokenizer, teacher=teacher)
    trainer.train()

`teacher` is either a table of logits by id (`teacher_logits`: kdlora's content-addressed cache, or the teacher run
per batch on its own encoding with `online=True`), or a teacher model run on the batch's own inputs (it must share
the student's tokenizer). The loss of a training batch is exactly `kdlora train`'s for the same batch (a per-batch
mean; the Trainer divides it over gradient accumulation as `kdlora train` does). Evaluation batches carry no
teacher: their loss is the task loss. Any model the Trainer takes works, a PEFT model included. The Trainer's
`remove_unused_columns` must be off (the id is no argument of the model's forward): this Trainer turns it off, and
its collator keeps only the tokenizer's inputs, the labels and the id.
"""

from __future__ import annotations

from transformers import DataCollatorWithPadding, Trainer

ID_COLUMN = "idx"
"""The column holding each example's id (kdlora's own name for it)."""


class DistillationCollator:
    """Pads a batch (the tokenizer's `pad`) and keeps each example's id as a `idx` tensor beside `labels`.

    Columns other than the tokenizer's inputs, the label and the id (the raw texts, say) are dropped, so a dataset
    can keep them while `remove_unused_columns` is off.
    """

    def __init__(self, tokenizer, id_column: str = ID_COLUMN, regression: bool = False):
        self.pad = DataCollatorWithPadding(tokenizer)
        self.inputs = set(tokenizer.model_input_names)
        self.id_column, self.regression = id_column, regression

    def __call__(self, features: list[dict]) -> dict:
        import torch

        missing = [f for f in features if self.id_column not in f]
        if missing:
            raise KeyError(f"an example has no {self.id_column!r} column (has: {', '.join(missing[0])}): add one, "
                           f"e.g. dataset.add_column({self.id_column!r}, list(range(len(dataset))))")
        batch = self.pad([{k: v for k, v in f.items() if k in self.inputs} for f in features])
        label = "labels" if "labels" in features[0] else "label" if "label" in features[0] else None
        if label is not None:
            dtype = torch.float32 if self.regression else torch.long
            batch["labels"] = torch.tensor([f[label] for f in features], dtype=dtype)
        batch[ID_COLUMN] = torch.tensor([int(f[self.id_column]) for f in features], dtype=torch.long)
        return batch


class DistillationTrainer(Trainer):
    """A `transformers.Trainer` on KD-LoRA's loss, `alpha * KD + (1 - alpha) * task loss` (`kdlora.distill`).

    teacher: a table with `lookup(ids) -> logits` (`teacher_logits`), or a teacher model run on each batch.
    temperature, alpha: the KD settings (`kdlora train --temperature --kd-alpha`). regression: MSE for both terms.
    """

    def __init__(self, *args, teacher=None, temperature: float = 2.0, alpha: float = 0.5, regression: bool = False,
                 **kwargs):
        if teacher is None:
            raise ValueError("DistillationTrainer needs teacher= (teacher_logits(...) or a teacher model)")
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = DistillationCollator(kwargs["processing_class"], regression=regression)
        super().__init__(*args, **kwargs)
        # the id is no argument of the model's forward: the Trainer would drop its column before the collator
        self.args.remove_unused_columns = False
        # kd_loss is a per-batch mean: the Trainer divides it by the accumulation steps (as `kdlora train` does)
        self.loss_is_scaled_for_ga = False
        self.teacher, self.temperature, self.alpha, self.regression = teacher, temperature, alpha, regression
        if not hasattr(teacher, "lookup"):
            teacher.eval().requires_grad_(False)

    def teacher_logits_for(self, ids, inputs):
        """The teacher's logits for the batch: looked up by id, or the teacher model run on the batch's inputs."""
        import torch

        if hasattr(self.teacher, "lookup"):
            return self.teacher.lookup(ids)
        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            return self.teacher(**{k: v.to(device) for k, v in inputs.items()}).logits.float().to(ids.device)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """KD-LoRA's loss for a batch with ids (training); the task loss for one without (evaluation)."""
        from kdlora.distill import kd_loss
        from kdlora.methods.base import task_loss

        inputs = dict(inputs)
        ids, labels = inputs.pop(ID_COLUMN, None), inputs.pop("labels")
        outputs = model(**inputs)
        if ids is None:
            loss = task_loss(outputs.logits, labels, self.regression)
        else:
            loss = kd_loss(outputs.logits, self.teacher_logits_for(ids, inputs), labels,
                           temperature=self.temperature, alpha=self.alpha, regression=self.regression)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation without the teacher: the id goes, the loss is the task loss."""
        inputs = {k: v for k, v in inputs.items() if k != ID_COLUMN}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def teacher_logits(teacher: str, dataset, text_columns, label_column: str = "label", id_column: str = ID_COLUMN,
                   task: str = "custom", max_length: int = 128, online: bool = False, device=None):
    """The teacher's logits for `dataset`'s examples by id: a kdlora FFT run folder or any sequence-classification
    checkpoint, on its own tokenizer's encoding of `text_columns`.

    Cached by default (kdlora's teacher-logit cache: keyed by the teacher's weights and tokenizer, each row by its
    example's id, texts and label, so edited data recomputes only the rows that changed); `online=True` runs the
    teacher per batch instead. `task` names the cache file (one per task and teacher).
    """
    from kdlora.data.examples import Examples
    from kdlora.train.teacher import OnlineTeacher, cached_teacher_logits

    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    ids = [int(i) for i in dataset[id_column]]
    texts = list(zip(*(dataset[c] for c in columns), strict=True))
    labels = [float(v) for v in dataset[label_column]]
    examples = Examples(ids, texts, labels, f"{getattr(dataset, '_fingerprint', '')}:{','.join(columns)}")
    if online:
        return OnlineTeacher(teacher, examples, max_length, device)
    return cached_teacher_logits(teacher, examples, task, "train", max_length, device=device)
