"""One training run: FFT, LoRA or KD-LoRA, driven by an accelerate loop that asks the Method what to do.

    setup (data, teacher logits, model)  ->  fit (epochs, evaluation, best checkpoint, collapse)  ->  save (staged)

The loop never looks at the method's name: `method.prepare` decides what trains, `method.distills` whether the
teacher's logits are needed, `method.loss` the loss. Plain accelerate rather than the HF Trainer: the KD loss
needs each batch's example ids to fetch teacher logits, and early stopping, collapse detection and the warm-up
are a few readable lines here instead of Trainer callbacks; `accelerate launch -m kdlora train ...` runs it on
several GPUs unchanged: a non-finite loss on any process stops every process, and the teacher's logits are
computed by the main process while the others wait, then read from the cache.

Memory (`peak_memory_mb`, `memory_kind` as `kdlora bench` names them) is the peak over building the model and
training it, less the process's memory before: taken after the teacher's logits exist, so no student's figure
includes its teacher, with the best checkpoint's copy kept in CPU memory, never on the accelerator.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdlora.config import TrainConfig
from kdlora.errors import UserError

DEV_SUBSET_SEED = 0
"""Seed of the dev subset (`max_eval_samples`): the same examples for every run, so seeds differ in training only."""


@dataclass
class Evaluation:
    metrics: dict
    score: float
    predictions: list


@dataclass
class TrainResult:
    """What one training run measured: written as metrics.json and stored by a sweep (`to_dict`)."""

    status: str
    """`done`, or `collapsed` when the loss went non-finite."""
    reason: str | None
    flags: list = field(default_factory=list)
    """`constant_predictions` (every dev prediction the same) and `majority_class` (that one is dev's majority)."""
    task: str = ""
    family: str = ""
    method: str = ""
    rank: int | None = None
    seed: int | None = None
    metrics: dict = field(default_factory=dict)
    """Dev metrics at the best epoch (the saved model's)."""
    score: float | None = None
    last_metrics: dict = field(default_factory=dict)
    """Dev metrics after the last epoch (what the official code reports)."""
    last_score: float | None = None
    last_flags: list = field(default_factory=list)
    trainable_params: int | None = None
    total_params: int | None = None
    adapter_params: int | None = None
    train_seconds: float | None = None
    teacher_logit_seconds: float | None = None
    peak_memory_mb: float | None = None
    """Peak memory of building and training the model, MB (see the module docstring)."""
    memory_kind: str | None = None
    """`cpu-peak-rss-delta` or `cuda-max-memory-allocated`, as a bench row's."""
    best_epoch: int | None = None
    steps: int = 0
    warmup_steps: int = 0
    history: list = field(default_factory=list)
    learning_rate: float | None = None
    train_examples: int = 0
    model: str = ""
    """What the run started from (hub name, folder, tiny build or derived student)."""
    label_names: list = field(default_factory=list)
    lora_targets: list | None = None
    """LoRA methods: the modules the adapters sit on."""
    trained_modules: list | None = None
    """LoRA methods: the modules trained in full beside the adapters (the task head)."""
    teacher_logits: dict | None = None
    """`{"source": "cache" | "computed" | "online", "fingerprint": ...}` for a distilling run."""
    run_key: str = ""
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, name: str):
        """Read a field by name, as from the metrics.json dict."""
        return getattr(self, name)


def forward_loss(model, method, batch, teacher, config, regression: bool):
    """One batch's training loss (the test for collapse detection replaces this)."""
    idx, labels = batch.pop("idx"), batch.pop("labels")
    logits = model(**batch).logits
    teacher_logits = teacher.lookup(idx) if method.distills else None
    return method.loss(logits, labels, teacher_logits, regression=regression, temperature=config.temperature,
                       alpha=config.kd_alpha)


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
    last = None
    for epoch in range(1, config.epochs + 1):
        for batch in train_loader:
            loss = forward_loss(model, method, batch, teacher, config, task.regression)
            # every process must stop together, or the others wait for this one's gradients forever
            bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=accelerator.device)
            bad_processes = int(accelerator.reduce(bad, reduction="sum").item())
            if bad_processes:
                bar.close()
                where = (f" ({loss.item()})" if accelerator.num_processes == 1 and not torch.isfinite(loss)
                         else f" on {bad_processes} of {accelerator.num_processes} processes")
                return {"reason": f"non-finite loss{where} at step {step + 1}", "best": best, "last": last,
                        "best_epoch": best_epoch, "steps": step, "warmup_steps": warmup_steps, "history": history}
            accelerator.backward(loss)
            accelerator.clip_grad_norm_([p for _, p in trainable], 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        result = last = evaluate(model, dev_loaders, task, accelerator)
        history.append({"epoch": epoch, "step": step, "score": result.score})
        if best is None or result.score > best.score:
            best, best_epoch, stale = result, epoch, 0
            # in CPU memory: a copy on the accelerator would be one more model in its peak (FFT: a whole one)
            best_state = [p.detach().to("cpu", copy=True) for _, p in trainable]
        elif step > warmup_steps:  # no stopping while the learning rate is still warming up
            stale += 1
        if config.patience and stale >= config.patience:
            break
    bar.close()
    with torch.no_grad():
        for (_, param), saved in zip(trainable, best_state, strict=True):
            param.copy_(saved.to(param.device))
    return {"reason": None, "best": best, "last": last, "best_epoch": best_epoch, "steps": step,
            "warmup_steps": warmup_steps, "history": history, "model": accelerator.unwrap_model(model)}


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
            for split, examples in data.items() if split != "train"}
    return train, devs


def load_data(config, task) -> dict:
    """The training examples and every dev split, subsampled as the config says."""
    from kdlora.data.loaders import load_split

    data = {"train": load_split(task, "train", config.data_dir).subset(config.max_train_samples, config.seed)}
    for split in task.dev_splits:
        data[split] = load_split(task, split, config.data_dir).subset(config.max_eval_samples, DEV_SUBSET_SEED)
    return data


def make_teacher(config, task, train_examples, device, progress: bool):
    """The source of teacher logits for a distilling method: a cached table, or the model run per batch."""
    from kdlora.teacher import OnlineTeacher, cached_teacher_logits, check_teacher, teacher_identity

    if not config.teacher:
        raise UserError(f"method {config.method} distils from a trained FFT teacher: pass --teacher RUN_DIR")
    check_teacher(config.teacher, *teacher_identity(config.teacher), task)
    if config.online_teacher:
        return OnlineTeacher(config.teacher, train_examples, config.max_length, device)
    return cached_teacher_logits(config.teacher, train_examples, task.name, "train", config.max_length,
                                 device=device, progress=progress)


def run_training(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train one run and write `out_dir/metrics.json` plus the model (FFT) or adapter (LoRA methods).

    A run whose loss went non-finite has status "collapsed" and a reason instead of raising; constant dev
    predictions are `flags` of a done run. Bad settings raise UserError.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from kdlora.bench.trackers import release_freed_memory, restart_peak, track_memory, warm_up_runtime
    from kdlora.families import get_family
    from kdlora.methods import LoraSettings, get_method
    from kdlora.modeling import adaptation, name_labels
    from kdlora.params import count_parameters
    from kdlora.rundir import environment, save_run
    from kdlora.sources import starting_model

    config.validate()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    task, method = config.task_spec(), get_method(config.method)
    family = get_family(config.family) if config.model is None else None
    accelerator = Accelerator(cpu=config.device == "cpu")
    set_seed(config.seed)
    data = load_data(config, task)
    teacher_started = time.perf_counter()
    teacher = None
    if method.distills:
        with accelerator.main_process_first():  # the others then read what the main process cached
            teacher = make_teacher(config, task, data["train"], accelerator.device, progress)
    teacher_seconds = time.perf_counter() - teacher_started
    warm_up_runtime(family.architecture(method.role), str(accelerator.device))  # libraries before the baseline
    release_freed_memory()
    with track_memory(str(accelerator.device)) as memory:
        start = starting_model(config, task, family, method)
        model, tokenizer, base = start.model, start.tokenizer, start.base
        name_labels(model, task.label_names)  # saved models name their classes (teacher checks read them)
        lora = LoraSettings(config.rank, config.lora_alpha, config.lora_dropout, config.use_rslora, config.use_dora)
        where = adaptation(model, start.missing, config.lora_targets) if method.uses_lora else None
        model = method.prepare(model, where, lora)
        # what loading left behind (a derived student's teacher, cut from and dropped) is not the run's cost
        release_freed_memory()
        restart_peak(str(accelerator.device))
        counts = count_parameters(model)
        train_loader, dev_loaders = _loaders(config, task, tokenizer, data)
        started = time.perf_counter()
        outcome = fit(model, train_loader, dev_loaders, task, method, teacher, config, accelerator, progress)
        seconds = time.perf_counter() - started
    best, last = outcome["best"], outcome["last"]
    result = TrainResult(
        status="collapsed" if outcome["reason"] else "done", reason=outcome["reason"],
        flags=prediction_flags(*best.predictions, task.regression) if best else [],
        task=task.name, family=config.family, method=method.name, rank=config.rank, seed=config.seed,
        metrics=best.metrics if best else {}, score=best.score if best else None,
        last_metrics=last.metrics if last else {}, last_score=last.score if last else None,
        last_flags=prediction_flags(*last.predictions, task.regression) if last else [],
        trainable_params=counts.trainable, total_params=counts.total, adapter_params=counts.adapter,
        train_seconds=round(seconds, 3), teacher_logit_seconds=round(teacher_seconds, 3),
        peak_memory_mb=round(memory.peak_mb, 1), memory_kind=memory.kind,
        best_epoch=outcome["best_epoch"], steps=outcome["steps"], warmup_steps=outcome["warmup_steps"],
        history=outcome["history"], learning_rate=config.lr, train_examples=len(data["train"]),
        model=start.description, label_names=list(task.label_names),
        lora_targets=list(where.lora_targets) if where else None,
        trained_modules=list(where.head_modules) if where else None,
        teacher_logits={"source": teacher.source, "fingerprint": teacher.fingerprint} if teacher else None,
        run_key=config.key(accelerator.num_processes), config=config.to_dict(),
        environment=environment(accelerator))
    if accelerator.is_main_process:
        save_run(out_dir, result.to_dict(), outcome.get("model"), tokenizer, base, task.num_labels)
    accelerator.wait_for_everyone()
    return result
