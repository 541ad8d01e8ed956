"""KD-LoRA inside a Hugging Face `Trainer` script: a collator that keeps each example's id, and a Trainer whose loss
is `kdlora.distill.kd_loss` against the teacher's logits for those ids.

    dataset = dataset.add_column("idx", list(range(len(dataset))))        # the id each teacher row is found by
    teacher = teacher_logits("runs/fft", dataset, text_columns=("sentence",))   # kdlora's teacher-logit cache
    trainer = DistillationTrainer(model=peft_model, args=TrainingArguments(...), train_dataset=tokenized,
                                  processing_class=tokenizer, teacher=teacher)
    trainer.train()

`teacher` is either a table of logits by id (`teacher_logits`: kdlora's content-addressed cache, or the teacher run
per batch on its own encoding with `online=True`), or a teacher model run on the batch's own inputs (it must share
the student's tokenizer). The loss of a training batch is exactly `kdlora train`'s for the same batch, and over
gradient accumulation both weight each batch by its examples: a window's gradient is the mean over the examples in
it (a short last window's too). A training batch without ids, where the teacher looks its logits up by id, is an
error (a collator that drops the column would train on the task loss alone). `label_smoothing_factor` smooths the
labels of the task term. Transfer data (text the teacher labels, without labels of its own) goes in the same
dataset: a row whose label is -100 (classification; `IGNORE_LABEL`) or whose `labelled` column is False gets the KD
term alone, as in `kdlora train` (its teacher logits come with the others': give `teacher_logits` every row).
Evaluation batches carry no teacher: their loss is the task loss. Any model the Trainer
takes works, a PEFT model included. The Trainer's `remove_unused_columns` must be off (the id is no argument of the
model's forward): this Trainer turns it off, and its collator keeps only the tokenizer's inputs, the labels and the
id.

Hidden-state distillation (`kdlora train --kd-hidden-weight`, `kdlora.hidden`): with a teacher model, `hidden_weight`
W adds W x the distance (`hidden_loss`: mse or cosine) between the student's layers and the teacher's at the real
tokens, `attention_weight` the attention-map KL (MiniLM), on the layer map `layers` ("1:2,2:4,3:6",
student:teacher, 0 = embeddings; default uniform: student i <- teacher i*T/S; a student cut from its teacher
passes the layers it kept, e.g. "1:1,2:3,3:5" for teacher layers 0, 2, 4). Where the widths differ, a linear
projection per pair (`trainer.hidden.projections`) trains in the Trainer's optimiser (added to the one
`create_optimizer` builds: with `optimizers=` of your own, add it yourself) and is never part of the saved model.
"""

from __future__ import annotations

from collections import Counter

from transformers import DataCollatorWithPadding, Trainer

from kdlora.errors import UserError

ID_COLUMN = "idx"
"""The column holding each example's id (kdlora's own name for it)."""
IGNORE_LABEL = -100
"""A classification label that marks a row without one (PyTorch's and transformers' `ignore_index`)."""
LABELLED_COLUMN = "labelled"
"""The column (and batch key) saying which rows have a label: False on transfer data (`kdlora.data.transfer`)."""


class DistillationCollator:
    """Pads a batch (the tokenizer's `pad`) and keeps each example's id as a `idx` tensor beside `labels`.

    Columns other than the tokenizer's inputs, the label and the id (the raw texts, say) are dropped, so a dataset
    can keep them while `remove_unused_columns` is off. A batch with rows without a label (label -100 for
    classification, or a `labelled` column False) gets a bool `labelled` tensor, and those rows a placeholder label
    of 0: the Trainer then counts every row of a window (`num_items_in_batch`), as the loss averages over them.
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
            labelled = [bool(f.get(LABELLED_COLUMN, True)) and (self.regression or f[label] != IGNORE_LABEL)
                        for f in features]
            batch["labels"] = torch.tensor([f[label] if ok else 0 for f, ok in zip(features, labelled, strict=True)],
                                           dtype=dtype)
            if not all(labelled):
                batch[LABELLED_COLUMN] = torch.tensor(labelled, dtype=torch.bool)
        batch[ID_COLUMN] = torch.tensor([int(f[self.id_column]) for f in features], dtype=torch.long)
        return batch


class DistillationTrainer(Trainer):
    """A `transformers.Trainer` on KD-LoRA's loss, `alpha * KD + (1 - alpha) * task loss` (`kdlora.distill`).

    teacher: a table with `lookup(ids) -> logits` (`teacher_logits`), or a teacher model run on each batch.
    temperature, alpha: the KD settings (`kdlora train --temperature --kd-alpha`). regression: MSE for both terms.
    hidden_weight, hidden_loss, layers, attention_weight: the hidden-state and attention-map terms (`kdlora train
    --kd-hidden-weight --kd-hidden-loss --kd-layers --kd-attention-weight`; 0: off); they need a teacher model.
    """

    def __init__(self, *args, teacher=None, temperature: float = 2.0, alpha: float = 0.5, regression: bool = False,
                 hidden_weight: float = 0.0, hidden_loss: str = "mse", layers: str | None = None,
                 attention_weight: float = 0.0, **kwargs):
        if teacher is None:
            raise ValueError("DistillationTrainer needs teacher= (teacher_logits(...) or a teacher model)")
        if kwargs.get("data_collator") is None and kwargs.get("processing_class") is not None:
            kwargs["data_collator"] = DistillationCollator(kwargs["processing_class"], regression=regression)
        super().__init__(*args, **kwargs)
        # the id is no argument of the model's forward: the Trainer would drop its column before the collator
        self.args.remove_unused_columns = False
        # the Trainer then counts each accumulation window's examples (`num_items_in_batch`), and `compute_loss`
        # returns each batch's share of the window's mean over them (the Trainer's own division is by batches)
        self.model_accepts_loss_kwargs, self.loss_is_scaled_for_ga = True, True
        self.teacher, self.temperature, self.alpha, self.regression = teacher, temperature, alpha, regression
        if not hasattr(teacher, "lookup"):
            teacher.eval().requires_grad_(False)
        self.hidden = self._hidden_match(hidden_weight, hidden_loss, layers, attention_weight)

    def _hidden_match(self, weight: float, loss: str, layers: str | None, attention_weight: float):
        """The `kdlora.hidden.HiddenMatch` between the student and the teacher model, or None when both terms are
        off; its projections sit on the Trainer's device."""
        from kdlora.hidden import HiddenDistillSettings, HiddenMatch, is_on

        settings = HiddenDistillSettings(kd_hidden_weight=weight, kd_layers=layers, kd_hidden_loss=loss,
                                         kd_attention_weight=attention_weight)
        bad = next((name for name, ok in settings.checks().items() if not ok), None)
        if bad is not None:
            raise UserError(f"DistillationTrainer: bad value for {bad}: {getattr(settings, bad)!r}")
        if not is_on(settings):
            return None
        if hasattr(self.teacher, "lookup"):
            raise ValueError("hidden-state distillation needs the teacher model itself (teacher=model), not a table "
                             "of its logits")
        match = HiddenMatch.between(settings, self.teacher, self.model)
        if match.projections is not None:
            match.projections.to(self.args.device)
        return match

    def create_optimizer(self, model=None):
        """The Trainer's optimiser, plus the hidden-state projections (no weight decay) when there are any."""
        optimizer = super().create_optimizer(model)
        projections = self.hidden.projections if self.hidden is not None else None
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if projections is not None and id(next(projections.parameters())) not in held:
            optimizer.add_param_group({"params": list(projections.parameters()), "weight_decay": 0.0})
        return optimizer

    def teacher_logits_for(self, ids, inputs):
        """The teacher's logits for the batch: looked up by id, or the teacher model run on the batch's inputs."""
        import torch

        if hasattr(self.teacher, "lookup"):
            return self.teacher.lookup(ids)
        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            logits = self.teacher(**{k: v.to(device) for k, v in inputs.items()}).logits.float()
        return logits.to(inputs["input_ids"].device)

    def teacher_outputs_for(self, inputs, options: dict):
        """The teacher model's outputs on the batch's inputs (`options`: its hidden states, attention maps), on the
        student's device."""
        import torch

        from kdlora.train.teacher import outputs_on

        device = next(self.teacher.parameters()).device
        with torch.no_grad():
            outputs = self.teacher(**{k: v.to(device) for k, v in inputs.items()}, **options)
        return outputs_on(outputs, inputs["input_ids"].device)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """KD-LoRA's loss for a training batch, as its share of its accumulation window; the task loss for an
        evaluation batch."""
        from kdlora.distill import kd_loss
        from kdlora.methods.base import task_loss

        inputs = dict(inputs)
        ids, labels = inputs.pop(ID_COLUMN, None), inputs.pop("labels")
        labelled = inputs.pop(LABELLED_COLUMN, None)
        if model.training and ids is None and hasattr(self.teacher, "lookup"):
            raise ValueError(f"a training batch has no {ID_COLUMN!r} column, so its teacher logits cannot be found: "
                             f"keep an {ID_COLUMN!r} column in the dataset and use DistillationCollator (the default "
                             "when processing_class is given) or a collator that keeps it")
        hidden = self.hidden if model.training else None
        outputs = model(**inputs, **(hidden.model_options if hidden else {}))
        smoothing = self.args.label_smoothing_factor
        if not model.training:
            loss = task_loss(outputs.logits, labels, self.regression, label_smoothing=smoothing)
            return (loss, outputs) if return_outputs else loss
        taught = self.teacher_outputs_for(inputs, hidden.model_options) if hidden else None
        teacher_logits = taught.logits.float() if hidden else self.teacher_logits_for(ids, inputs)
        loss = kd_loss(outputs.logits, teacher_logits, labels, temperature=self.temperature, alpha=self.alpha,
                       regression=self.regression, label_smoothing=smoothing, labelled=labelled)
        if hidden:
            loss = loss + hidden.loss(outputs, taught, inputs["attention_mask"])
        if num_items_in_batch is None:  # the examples were not counted: every batch weighs the same
            loss = loss / self.current_gradient_accumulation_steps
        else:
            loss = loss * len(labels) / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # the count is every process's; DDP averages them
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation without the teacher: the id and the labelled mask go, the loss is the task loss."""
        inputs = {k: v for k, v in inputs.items() if k not in (ID_COLUMN, LABELLED_COLUMN)}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def teacher_logits(teacher: str, dataset, text_columns, label_column: str = "label", id_column: str = ID_COLUMN,
                   task: str = "custom", max_length: int = 128, online: bool = False, device=None):
    """The teacher's logits for `dataset`'s examples by id: a kdlora FFT run folder or any sequence-classification
    checkpoint, on its own tokenizer's encoding of `text_columns`.

    Cached by default (kdlora's teacher-logit cache: keyed by the teacher's weights and tokenizer, each row by its
    example's id, texts and label, so edited data recomputes only the rows that changed); `online=True` runs the
    teacher per batch instead. `task` names the cache file (one per task and teacher). An id that occurs twice in
    `id_column` is a UserError.
    """
    from kdlora.data.examples import Examples
    from kdlora.train.teacher import OnlineTeacher, cached_teacher_logits

    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    ids = [int(i) for i in dataset[id_column]]
    repeated = next((i for i, n in Counter(ids).items() if n > 1), None)
    if repeated is not None:  # each id finds one row of logits: a repeated one would get another example's
        raise UserError(f"column {id_column!r}: example id {repeated} occurs more than once (concatenated datasets?); "
                        f"number the examples afresh: dataset.remove_columns({id_column!r}).add_column("
                        f"{id_column!r}, list(range(len(dataset))))")
    texts = list(zip(*(dataset[c] for c in columns), strict=True))
    labels = [float(v) for v in dataset[label_column]]
    examples = Examples(ids, texts, labels, f"{getattr(dataset, '_fingerprint', '')}:{','.join(columns)}")
    if online:
        return OnlineTeacher(teacher, examples, max_length, device)
    return cached_teacher_logits(teacher, examples, task, "train", max_length, device=device)
