"""One training run: FFT, LoRA or KD-LoRA, driven by an accelerate loop that asks the Method what to do.

    setup (data, model, teacher)  ->  fit (epochs, evaluation, best checkpoint, collapse)  ->  save (staged)

The loop never looks at the method's name: `method.prepare` decides what trains, `method.distills` whether the
teacher's logits are needed, `method.loss` the loss. Plain accelerate rather than the HF Trainer: the KD loss
needs each batch's example ids to fetch teacher logits, and early stopping, collapse detection and the warm-up
are a few readable lines here instead of Trainer callbacks; `accelerate launch -m kdlora train ...` runs it on
several GPUs unchanged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from kdlora.config import TrainConfig
from kdlora.errors import UserError


@dataclass
class Evaluation:
    metrics: dict
    score: float
    predictions: list


def forward_loss(model, method, batch, teacher, config, regression: bool):
    """One batch's training loss (the test for collapse detection replaces this)."""
    idx, labels = batch.pop("idx"), batch.pop("labels")
    logits = model(**batch).logits
    teacher_logits = teacher.lookup(idx) if method.distills else None
    return method.loss(logits, labels, teacher_logits, regression=regression, temperature=config.temperature,
                       alpha=config.kd_alpha)


def collapse_reason(predictions, labels, regression: bool) -> str | None:
    """Why dev predictions show a collapsed model (all one class, or one constant value), else None."""
    import numpy as np

    predictions, labels = np.asarray(predictions, dtype=float), np.asarray(labels, dtype=float)
    if len(predictions) < 2 or len(np.unique(labels)) < 2:
        return None
    if regression and np.ptp(predictions) < 1e-6:
        return f"constant predictions on dev (every example scored {predictions[0]:.4g})"
    if not regression and len(np.unique(predictions)) == 1:
        return f"constant predictions on dev (every example labelled {int(predictions[0])})"
    return None


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


def _optimizer(model, config):
    import torch

    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def fit(model, train_loader, dev_loaders, task, method, teacher, config, accelerator, progress: bool) -> dict:
    """Train for `config.epochs`, scoring dev after each; keeps the best state. Returns the fit's outcome."""
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    optimizer = _optimizer(model, config)
    model, optimizer, train_loader, *loaders = accelerator.prepare(model, optimizer, train_loader,
                                                                   *dev_loaders.values())
    dev_loaders = dict(zip(dev_loaders, loaders, strict=True))
    total_steps = len(train_loader) * config.epochs  # real optimiser steps of this process
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    best, best_state, best_epoch, stale, step, history = None, None, None, 0, 0, []
    bar = tqdm(total=total_steps, disable=not (progress and accelerator.is_main_process), leave=False,
               desc=f"{config.method} {config.task}")
    model.train()
    for epoch in range(1, config.epochs + 1):
        for batch in train_loader:
            loss = forward_loss(model, method, batch, teacher, config, task.regression)
            if not torch.isfinite(loss):
                bar.close()
                return {"reason": f"non-finite loss ({loss.item()}) at step {step + 1}", "best": best,
                        "best_epoch": best_epoch, "steps": step, "warmup_steps": warmup_steps, "history": history}
            accelerator.backward(loss)
            accelerator.clip_grad_norm_([p for _, p in trainable], 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        result = evaluate(model, dev_loaders, task, accelerator)
        history.append({"epoch": epoch, "step": step, "score": result.score})
        if best is None or result.score > best.score:
            best, best_epoch, stale = result, epoch, 0
            best_state = [p.detach().clone() for _, p in trainable]
        elif step > warmup_steps:  # no stopping while the learning rate is still warming up
            stale += 1
        if config.patience and stale >= config.patience:
            break
    bar.close()
    with torch.no_grad():
        for (_, param), saved in zip(trainable, best_state, strict=True):
            param.copy_(saved)
    reason = collapse_reason(*best.predictions, task.regression)
    return {"reason": reason, "best": best, "best_epoch": best_epoch, "steps": step, "warmup_steps": warmup_steps,
            "history": history, "model": accelerator.unwrap_model(model)}


def _loaders(config, task, tokenizer, data):
    import torch
    from torch.utils.data import DataLoader

    from kdlora.data.encode import Collator, encode

    collate = Collator(tokenizer, task.regression)
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(encode(data["train"], tokenizer, config.max_length), batch_size=config.batch_size,
                       shuffle=True, generator=generator, collate_fn=collate)
    devs = {split: DataLoader(encode(examples, tokenizer, config.max_length), batch_size=max(64, config.batch_size),
                              collate_fn=collate)
            for split, examples in data.items() if split not in ("train", "test")}
    return train, devs


def score_test(model, config, task, tokenizer, examples, accelerator) -> dict:
    """The best checkpoint's metrics on the test split, scored once after training (never used to select)."""
    from torch.utils.data import DataLoader

    from kdlora.data.encode import Collator, encode

    loader = DataLoader(encode(examples, tokenizer, config.max_length), batch_size=max(64, config.batch_size),
                        collate_fn=Collator(tokenizer, task.regression))
    return evaluate(model, {"test": accelerator.prepare(loader)}, task, accelerator).metrics


def load_data(config, task) -> dict:
    """The training examples and every dev split, subsampled as the config says."""
    from kdlora.data.loaders import load_split

    data = {"train": load_split(task, "train", config.data_dir).subset(config.max_train_samples, config.seed)}
    for split in task.dev_splits:
        data[split] = load_split(task, split, config.data_dir).subset(config.max_eval_samples, config.seed)
    if task.files is not None and task.files.test_file:
        data["test"] = load_split(task, "test")  # read now: a bad test file fails before training, not after
    return data


def make_teacher(config, task, train_examples, device, progress: bool):
    """The source of teacher logits for a distilling method: a cached table, or the model run per batch."""
    from kdlora.sources import check_teacher_labels, teacher_config
    from kdlora.teacher import OnlineTeacher, cached_teacher_logits

    check_teacher_labels(teacher_config(config.teacher), task, config.teacher)
    if config.online_teacher:
        return OnlineTeacher(config.teacher, train_examples, config.max_length, device)
    return cached_teacher_logits(config.teacher, train_examples, task.name, "train", config.max_length,
                                 device=device, progress=progress)


def check_before_work(config: TrainConfig, out_dir: str | Path, method, architecture, verify: bool = True) -> None:
    """What can be checked before data or models load: the output folder, the teacher (given and whole), the
    weights package. Each failure is one UserError."""
    from kdlora.files import check_writable
    from kdlora.rundir import check_run
    from kdlora.sources import is_run_folder

    check_writable(out_dir)
    derived = architecture is not None and architecture.derived  # None: any encoder given by --model
    needs_teacher = method.distills or (derived and config.student_init == "trained")
    if needs_teacher and not config.teacher:
        raise UserError(f"method {config.method} distils from a trained FFT teacher: pass --teacher RUN_DIR")
    if needs_teacher and is_run_folder(config.teacher):  # a checkpoint teacher is checked when it loads
        check_run(config.teacher, verify)
    if architecture is None:
        return
    if not config.tiny and not config.pretrained and architecture.weights_package and not architecture.derived:
        architecture.weights_path()  # a UserError naming the extra when its package is missing


def run_training(config: TrainConfig, out_dir: str | Path, progress: bool = True, verify: bool = True) -> dict:
    """Train one run and write `out_dir/metrics.json` plus the model (FFT) or adapter (LoRA methods).

    Returns the metrics dict; a collapsed run (non-finite loss, constant dev predictions) has status "collapsed"
    and a reason instead of raising. Bad settings raise UserError; a damaged teacher folder too (unless not
    `verify`: then only what cannot be loaded).
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from kdlora.families import get_family
    from kdlora.methods import LoraSettings, get_method
    from kdlora.modeling import adaptation, name_labels, quiet_peft_deprecation
    from kdlora.params import count_parameters
    from kdlora.rundir import environment, peak_memory, save_run
    from kdlora.sources import starting_model

    config.validate()
    quiet_peft_deprecation()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    task, method = config.task_spec(), get_method(config.method)
    family = get_family(config.family) if config.model is None else None
    check_before_work(config, out_dir, method, family.architecture(method.role) if family else None, verify)
    accelerator = Accelerator(cpu=config.device == "cpu")
    set_seed(config.seed)
    data = load_data(config, task)
    start = starting_model(config, task, family, method)
    model, tokenizer, base = start.model, start.tokenizer, start.base
    name_labels(model, task.label_names)
    lora = LoraSettings(config.rank, config.lora_alpha, config.lora_dropout, config.use_rslora, config.use_dora)
    where = adaptation(model, start.missing, config.lora_targets) if method.uses_lora else None
    model = method.prepare(model, where, lora)
    counts = count_parameters(model)
    teacher_started = time.perf_counter()
    teacher = make_teacher(config, task, data["train"], accelerator.device, progress) if method.distills else None
    teacher_seconds = time.perf_counter() - teacher_started
    train_loader, dev_loaders = _loaders(config, task, tokenizer, data)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outcome = fit(model, train_loader, dev_loaders, task, method, teacher, config, accelerator, progress)
    seconds = time.perf_counter() - started
    best = outcome["best"]
    test = None
    if "test" in data and outcome.get("model") is not None:
        test = score_test(outcome["model"], config, task, tokenizer, data["test"], accelerator)
    metrics = {
        "status": "collapsed" if outcome["reason"] else "done", "reason": outcome["reason"],
        "task": task.name, "family": config.family, "method": method.name, "rank": config.rank, "seed": config.seed,
        "metrics": best.metrics if best else {}, "score": best.score if best else None,
        "trainable_params": counts.trainable, "total_params": counts.total, "adapter_params": counts.adapter,
        "train_seconds": round(seconds, 3), "teacher_logit_seconds": round(teacher_seconds, 3),
        **peak_memory(), "best_epoch": outcome["best_epoch"], "steps": outcome["steps"],
        "warmup_steps": outcome["warmup_steps"], "history": outcome["history"], "learning_rate": config.lr,
        "train_examples": len(data["train"]), "model": start.description, "label_names": list(task.label_names),
        "test_metrics": test, "lora_targets": list(where.lora_targets) if where else None,
        "trained_modules": list(where.head_modules) if where else None,
        "run_key": config.key(), "config": config.to_dict(), "environment": environment(accelerator),
    }
    if accelerator.is_main_process:
        save_run(out_dir, metrics, outcome.get("model"), tokenizer, base, task.num_labels)
    accelerator.wait_for_everyone()
    return metrics
