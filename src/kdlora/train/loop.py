"""The training loop of one run: batches, the method's loss, evaluation, the best state, checkpoints.

    fit(model, loaders, task, method, teacher_source, config, accelerator, ...)  ->  outcome dict (best, last, history)

It never looks at the method's name (`method.loss` is the loss). Every process stops together on a non-finite loss;
the best state is kept off the measured memory (`BestWeights`) and, like the checkpoints `save_checkpoints` writes,
copied aside inside `outside_measure` (the run's memory tracker leaves it out of the peak): every method's figure is
then its training alone, whatever the size of its trainable weights. Each checkpoint holds what `resume` needs (see
`kdlora.train.checkpoint`); the shuffle order depends only on (seed, epoch), so a resumed run sees the batches an
uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdlora.lease import process_exists
from kdlora.train import checkpoint, tracking


@dataclass
class Evaluation:
    metrics: dict
    score: float
    predictions: list


def forward_loss(model, method, batch, teacher_source, config, regression: bool):
    """One batch's training loss: the method's, from the outputs, the batch (labels kept in it, and which rows have
    one: `labelled`, None without transfer data) and the teacher's logits from `teacher_source` (a cached
    `LogitTable` or an `OnlineTeacher`, `kdlora.train.teacher`; None for a method that does not distil), plus the
    hidden-state term when the teacher runs beside the student for it (`teacher_source.match`: see `kdlora.hidden`;
    on every row, labelled or not).
    The test for collapse detection replaces this."""
    idx, labels, labelled = batch.pop("idx"), batch.pop("labels"), batch.pop("labelled", None)
    match = getattr(teacher_source, "match", None)
    # no labels: the model's own loss would be computed and thrown away
    outputs = model(**batch, **(match.model_options if match else {}))
    kept = {**batch, "labels": labels, "labelled": labelled}
    if match is None:
        teacher_logits = teacher_source.lookup(idx) if method.distills else None
        return method.loss(model, outputs, kept, teacher_logits, config, regression)
    taught = teacher_source.outputs(idx, batch["input_ids"], **match.model_options)
    loss = method.loss(model, outputs, kept, taught.logits.float(), config, regression)
    return loss + match.loss(outputs, taught, batch["attention_mask"])


def optimiser_steps(batches: int, config) -> int:
    """Optimiser steps of a run whose training loader gives this process `batches` batches an epoch."""
    return math.ceil(batches / config.grad_accum) * config.epochs


def prediction_flags(predictions, labels, regression: bool) -> list[str]:
    """`constant_predictions` when every dev prediction is the same (one class, or one value), plus
    `majority_class` when that class is dev's most frequent label (WNLI's expected outcome); else []."""
    import numpy as np

    predictions, labels = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    if len(predictions) < 2:
        return []
    if regression:
        return ["constant_predictions"] if np.ptp(predictions) < 1e-6 else []
    if len(np.unique(predictions)) > 1:
        return []
    values, counts = np.unique(labels, return_counts=True)
    majority = values[counts == counts.max()]
    return ["constant_predictions"] + (["majority_class"] if predictions[0] in majority else [])


def evaluate(model, loaders: dict, task, accelerator) -> Evaluation:
    """Task metrics on every dev split; MNLI's are prefixed `matched_` / `mismatched_`."""
    import torch

    from kdlora.metrics import compute_metrics, task_score

    model.eval()
    metrics, first_predictions = {}, None
    for split, loader in loaders.items():
        predictions, labels = [], []
        with torch.no_grad():
            for batch in loader:
                batch.pop("idx")
                gold = batch.pop("labels")
                logits = model(**batch).logits
                guess = logits.view(-1) if task.regression else logits.argmax(-1)
                guess, gold = accelerator.gather_for_metrics((guess, gold))
                predictions += guess.float().cpu().tolist()
                labels += gold.float().cpu().tolist()
        split_metrics = compute_metrics(task, predictions, labels)
        prefix = f"{split.removeprefix('validation_')}_" if len(loaders) > 1 else ""
        metrics.update({prefix + k: v for k, v in split_metrics.items()})
        if first_predictions is None:
            first_predictions, first_labels = predictions, labels
    if len(loaders) > 1:
        metrics["accuracy"] = metrics[f"{next(iter(loaders)).removeprefix('validation_')}_accuracy"]
    model.train()
    return Evaluation(metrics, task_score(task, metrics), [first_predictions, first_labels])


def optimizer_of(model, method, config):
    """AdamW over the parameter groups the method gives (each group may set its own learning rate and weight
    decay), at the run's peak learning rate."""
    import torch

    return torch.optim.AdamW(method.parameter_groups(model, config), lr=config.lr)


class BestWeights:
    """The trainable weights of the best evaluation so far, and the method's own state then (AdaLoRA's rank pattern:
    what its saved adapter is cut to), kept off the memory a run measures: in CPU memory when it trains on an
    accelerator (a copy there would be one more model in its peak), in a temporary folder when it trains on the CPU
    (in CPU memory the copy would be inside its peak RSS: a whole model for FFT, a few KB for LoRA, inflating
    KD-LoRA's saving).

    The folder is named after the process (`kdlora-best-<pid>-...`): one left behind by a process that was killed
    (a sweep's stopped child, a resume test) is removed by the next run that starts, once no process has that pid."""

    def __init__(self, on_cpu: bool):
        if on_cpu:
            remove_orphaned_folders()
        self._folder = tempfile.TemporaryDirectory(prefix=f"kdlora-best-{os.getpid()}-") if on_cpu else None
        self._state = self._method_state = None

    def discard(self) -> None:
        """Drop the kept state and its folder (a run that ends without a model: its loss went non-finite)."""
        self._state = self._method_state = None
        if self._folder is not None:
            self._folder.cleanup()

    def keep(self, named, method_state: dict | None = None) -> None:
        """Replace the kept weights by copies of `named` ((name, tensor) pairs), and the kept method state by a copy
        of `method_state` (a `state_dict()`; None: the method keeps none)."""
        import torch

        if self._folder is None:
            self._state = [t.detach().to("cpu", copy=True) for _, t in named]
            self._method_state = _to_cpu(method_state)
            return
        from safetensors.torch import save_file

        self._state = f"{self._folder.name}/best.safetensors"
        save_file({n: t.detach().cpu().contiguous() for n, t in named}, self._state)
        self._method_state = None if method_state is None else f"{self._folder.name}/method-state.pt"
        if method_state is not None:
            torch.save(method_state, self._method_state)

    def restore(self, trainable, method_state=None) -> None:
        """Copy the kept weights into `trainable` ((name, parameter) pairs) and the kept method state into
        `method_state` (its `load_state_dict`), then drop them."""
        import torch

        if isinstance(self._state, str):
            from safetensors.torch import load_file

            saved = load_file(self._state)
            self._state = [saved.pop(name) for name, _ in trainable]
        if isinstance(self._method_state, str):
            self._method_state = torch.load(self._method_state, map_location="cpu", weights_only=True)
        with torch.no_grad():
            for (_, param), kept in zip(trainable, self._state, strict=True):
                param.copy_(kept.to(param.device, param.dtype))
        if method_state is not None and self._method_state is not None:
            method_state.load_state_dict(self._method_state)
        self._state = self._method_state = None
        if self._folder is not None:
            self._folder.cleanup()


_BEST_FOLDER = re.compile(r"kdlora-best-(\d+)-")


def remove_orphaned_folders(root: str | None = None) -> list[str]:
    """Remove the `BestWeights` folders under `root` (the temporary folder) whose process is gone; their names."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob("kdlora-best-*"):
        match = _BEST_FOLDER.match(path.name)
        if match is None or not path.is_dir() or process_exists(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _to_cpu(tree):
    """A copy of `tree` (dicts and lists of tensors and plain values) with every tensor copied to the CPU."""
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree.detach().to("cpu", copy=True) if hasattr(tree, "detach") else tree


def fit(model, train_loader, dev_loaders, task, method, teacher_source, config, accelerator, progress: bool,
        run_dir: Path, resume: bool = False, outside_measure=contextlib.nullcontext, should_stop=None) -> dict:
    """Train for `config.epochs`, scoring dev every `eval_steps` optimiser steps and at each epoch's end; keeps the
    best state (and, with `save_checkpoints`, checkpoints to resume from). Returns the fit's outcome.
    `outside_measure()`: the context the bookkeeping runs in (keeping the best state, writing checkpoints), which
    the run's memory figure leaves out (`kdlora.meters.left_out_of_peak`). `should_stop(score, step) -> bool`, if
    given, hears every evaluation and may stop the run, as a hyper-parameter search prunes one (`kdlora.trial`):
    it ends like an early-stopped run, keeps its best state, and its outcome says `pruned_at_step`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    sampler = train_loader.sampler
    optimizer = optimizer_of(model, method, config)
    model, optimizer, train_loader, *loaders = accelerator.prepare(model, optimizer, train_loader,
                                                                   *dev_loaders.values())
    dev_loaders = dict(zip(dev_loaders, loaders, strict=True))
    total_steps = optimiser_steps(len(train_loader), config)  # optimiser steps, this process
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    at = checkpoint.Position(run_key=config.key(), num_processes=accelerator.num_processes)
    # what a checkpoint holds beside the weights, the optimiser and the RNGs: the schedule and the method's own
    # state (AdaLoRA's budget); kdlora saves them itself (accelerate would unpickle them with code, see checkpoint)
    states = {"schedule": schedule}
    method_state = method.checkpointed(accelerator.unwrap_model(model))
    if method_state is not None:
        states["method"] = method_state
    accelerator.register_save_state_pre_hook(checkpoint.keep_trainable_only(model, {n for n, _ in trainable}))
    best_state = BestWeights(on_cpu=accelerator.device.type == "cpu")
    if resume:
        checkpoint.load_checkpoint(accelerator, run_dir, at, states)
        if at.best is not None:
            saved = checkpoint.best_weights(run_dir)
            kept = checkpoint.best_state(run_dir) if method_state is not None else None
            with outside_measure():
                best_state.keep([(name, saved[name]) for name, _ in trainable], kept)
    resumed_at = at.step
    pruned_at = None
    tracking.start_trackers(accelerator, config.trackers, config.to_dict(), run_dir.name, at.tracker_run_ids)

    last = None

    def evaluate_and_keep(epoch: int) -> bool:
        """Score dev, keep the best, checkpoint; True when patience has run out."""
        nonlocal last, pruned_at
        result = last = evaluate(model, dev_loaders, task, accelerator)
        at.history.append({"epoch": epoch, "step": at.step, "score": result.score})
        tracking.log_evaluation(accelerator, result.metrics, result.score, at.step)
        is_best = at.best is None or result.score > at.best["score"]
        if is_best:
            at.best = {"metrics": result.metrics, "score": result.score, "predictions": result.predictions}
            at.best_epoch, at.best_step, at.stale = epoch, at.step, 0
            with outside_measure():  # the method's state too: AdaLoRA's saved adapter is cut to its rank pattern
                best_state.keep(trainable, method_state.state_dict() if method_state else None)
        elif at.step > warmup_steps:  # no stopping while the learning rate is still warming up
            at.stale += 1
        if config.save_checkpoints:  # not in the run key: not in its memory figure either
            with outside_measure():
                checkpoint.save_checkpoint(accelerator, run_dir, is_best, at, states)
        if should_stop is not None and should_stop(result.score, at.step):
            pruned_at = at.step  # stops as early stopping does: the best state so far is the run's
            return True
        return bool(config.patience and at.stale >= config.patience)

    def outcome(reason: str | None, with_model: bool) -> dict:
        best = Evaluation(**at.best) if at.best else None
        if not with_model:  # no model to restore the best state into
            best_state.discard()
        return {"reason": reason, "best": best, "last": last, "best_epoch": at.best_epoch, "best_step": at.best_step,
                "steps": at.step, "warmup_steps": warmup_steps, "history": at.history, "resumed_at_step": resumed_at,
                "pruned_at_step": pruned_at,
                "model": accelerator.unwrap_model(model) if with_model else None}

    bar = tqdm(total=total_steps, initial=at.step, disable=not (progress and accelerator.is_main_process),
               leave=False, desc=f"{config.method} {config.task}")
    model.train()
    stop = bool(config.patience and at.stale >= config.patience)
    while at.epoch <= config.epochs and not stop:
        epoch = at.epoch
        sampler.set_epoch(epoch)
        losses, window = [], 0  # window: examples in the accumulation window so far (a checkpoint is at its start)
        for batch in accelerator.skip_first_batches(train_loader, at.batch) if at.batch else train_loader:
            with accelerator.accumulate(model):
                examples = len(batch["labels"])
                loss = forward_loss(model, method, batch, teacher_source, config, task.regression)
                # every process must stop together, or the others wait for this one's gradients forever
                bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=accelerator.device)
                bad_processes = int(accelerator.reduce(bad, reduction="sum").item())
                if bad_processes:
                    bar.close()
                    where = (f" ({loss.item()})" if accelerator.num_processes == 1 and not torch.isfinite(loss)
                             else f" on {bad_processes} of {accelerator.num_processes} processes")
                    return outcome(f"non-finite loss{where} at step {at.step + 1}", with_model=False)
                # each batch weighs its examples: a window's gradient is the mean over the examples in it, a short
                # last window's too (one batch a window: its mean already is)
                accelerator.backward(loss * examples if config.grad_accum > 1 else loss)
                window += examples
                if accelerator.sync_gradients:
                    if config.grad_accum > 1:
                        _mean_over_window([p for _, p in trainable], window, config.grad_accum, accelerator)
                    window = 0
                    accelerator.clip_grad_norm_([p for _, p in trainable], 1.0)
                optimizer.step()
                if accelerator.sync_gradients:
                    schedule.step()
                    # before zero_grad: AdaLoRA's budget update scores importance from the gradients
                    method.after_step(accelerator.unwrap_model(model), at.step + 1, config)
                optimizer.zero_grad()
            at.batch += 1
            losses.append(loss.item())
            if not accelerator.sync_gradients:
                continue
            at.step += 1
            accelerator.log({"train/loss": sum(losses) / len(losses), "train/lr": schedule.get_last_lr()[0]},
                            step=at.step)
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            losses = []
            if config.eval_steps and at.step % config.eval_steps == 0 and at.batch < len(train_loader):
                stop = evaluate_and_keep(epoch)
                if stop:
                    break
        if stop:
            break
        at.epoch, at.batch = epoch + 1, 0
        stop = evaluate_and_keep(epoch)
    bar.close()
    with outside_measure():
        best_state.restore(trainable, method_state)
    return outcome(None, with_model=True)


def _mean_over_window(parameters, examples: int, grad_accum: int, accelerator) -> None:
    """Turn the gradients of a window's per-batch example sums, each divided by `grad_accum` (accelerate's full
    window) and averaged over processes (DDP), into their mean over the window's `examples` (every process's)."""
    import torch

    total = examples
    if accelerator.num_processes > 1:
        count = torch.tensor([examples], device=accelerator.device)
        total = int(accelerator.reduce(count, reduction="sum").item())
    scale = grad_accum * accelerator.num_processes / total
    for param in parameters:
        if param.grad is not None:
            param.grad.mul_(scale)


def grouped_by_length(order: list[int], lengths: list[int], group: int, batch_size: int) -> list[int]:
    """`order` cut into groups of `group` examples, each sorted by length, longest first (a stable sort: ties keep
    their random order); then the batch holding the longest example moved to the front."""
    grouped = [i for start in range(0, len(order), group)
               for i in sorted(order[start:start + group], key=lambda i: -lengths[i])]
    batches = [grouped[start:start + batch_size] for start in range(0, len(grouped), batch_size)]
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]], default=0)
    if batches:
        batches[0], batches[longest] = batches[longest], batches[0]
    return [i for batch in batches for i in batch]


class EpochShuffle:
    """The training examples in a random order that depends only on (seed, epoch), so a resumed run, which skips
    the batches it already trained, sees the same order as an uninterrupted one.

    Given `lengths` (one per example) and `batch_size`, the order is grouped by length as the HF Trainer's
    `LengthGroupedSampler` does: the random order is cut into groups of `GROUP_BATCHES` batches, each group sorted
    longest first, and the longest batch of the epoch goes first (a too-large batch then fails at once). Batches of
    similar length pad less under dynamic padding."""

    GROUP_BATCHES = 50

    def __init__(self, size: int, seed: int, lengths: list[int] | None = None, batch_size: int | None = None):
        self.size, self.seed, self.epoch = size, seed, 1
        self.lengths, self.batch_size = lengths, batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.lengths is None:
            return iter(order)
        return iter(grouped_by_length(order, self.lengths, self.batch_size * self.GROUP_BATCHES, self.batch_size))

    def __len__(self) -> int:
        return self.size
