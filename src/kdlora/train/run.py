"""One training run of any registered method (FFT, LoRA, KD-LoRA, ...), driven by an accelerate loop that asks
the Method what to do.

    setup (data, teacher logits, model)  ->  fit (`loop.py`: epochs, evaluation, best state)  ->  save (staged)

The loop never looks at the method's name: `method.prepare` decides what trains, `method.distills` whether the
teacher's logits are needed, `method.loss` the loss, `method.after_step` what follows each optimiser step. Plain
accelerate rather than the HF Trainer: the KD loss needs each batch's example ids to fetch teacher logits, and
early stopping, collapse detection and the warm-up are a few readable lines here instead of Trainer callbacks;
`accelerate launch -m kdlora train ...` runs it on several GPUs unchanged: a non-finite loss on any process stops
every process, and the teacher's logits are computed by the main process while the others wait, then read from the
cache.

Memory (`peak_memory_mb`, `memory_kind` as `kdlora bench` names them) is the peak over building the model and
training it (weights, gradients, optimiser state, activations, dev scoring), less the process's memory before:
taken after the teacher's logits exist, so no student's figure includes its teacher, except where the teacher stays
resident beside the student: hidden-state or attention-map distillation (`kdlora.hidden`) runs it on every batch,
loaded after the student inside the measured block, so its weights and activations are in the figure
(`teacher_resident`). Measured the same way for every method, the figure leaves out the bookkeeping
(`kdlora.train.loop.BestWeights`' copy of the best weights, kept off the measured memory, and the checkpoints
`save_checkpoints` writes). A resumed run's covers only its segment after the resume (`cost_covers`).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdlora.config import TrainConfig
from kdlora.data.transfer import load_transfer, with_transfer
from kdlora.errors import UserError
from kdlora.metrics import kept_predictions
from kdlora.precision import AUTO
from kdlora.train import checkpoint, tracking
from kdlora.train.loop import EpochShuffle, evaluate, fit, optimiser_steps, prediction_flags

DEV_SUBSET_SEED = 0
"""Seed of the dev subset (`max_eval_samples`): the same examples for every run, so seeds differ in training only."""


@dataclass
class TrainResult:
    """What one training run measured: written as metrics.json and stored by a sweep (`to_dict`)."""

    status: str
    """`done`, or `collapsed` when the loss went non-finite."""
    reason: str | None
    flags: list = field(default_factory=list)
    """`constant_predictions` (every dev prediction the same) and `majority_class` (that one is dev's majority);
    `pruned` when a hyper-parameter search stopped the run early (`kdlora.sweep.search`)."""
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
    """Peak memory of building and training the model, MB: no best-weights copy, no checkpoint writing, and no
    teacher unless it is resident (`teacher_resident`; see the module docstring)."""
    memory_kind: str | None = None
    """`cpu-peak-rss-delta` or `cuda-max-memory-allocated`, as a bench row's."""
    best_epoch: int | None = None
    best_step: int | None = None
    steps: int = 0
    warmup_steps: int = 0
    history: list = field(default_factory=list)
    learning_rate: float | None = None
    train_examples: int = 0
    """The labelled training examples (transfer data not counted)."""
    transfer_examples: int = 0
    """Transfer data: the unlabelled examples the teacher labelled, trained on beside the labelled ones."""
    transfer_source: str | None = None
    """Where they came from: `file PATH (sha256 ...)` or `train split: N of M rows outside the labelled subset`."""
    precision: str = "fp32"
    dev_precision: str = "fp32"
    """What dev was scored in during training (`metrics`, `score`, `history` and so the choice of the best epoch):
    `fp32`, or the run's bf16 / fp16 under the autocast accelerate wraps the model's forward in."""
    fp32_metrics: dict | None = None
    """A mixed-precision run's saved (best) model scored on dev in fp32, as `predict` and `export` run it; None for
    an fp32 run, whose `metrics` are that already."""
    fp32_score: float | None = None
    effective_batch_size: int | None = None
    """batch size x gradient accumulation x processes."""
    resumed_at_step: int | None = None
    """The optimiser step a resumed run continued from."""
    cost_covers: str = "whole run"
    """What `train_seconds`, the energy and the peak memory cover: `whole run`, or `after resume` for a resumed run
    (only the segment after the resume, its peak including loading the checkpoint): reports leave those out of
    every cost figure and count them."""
    energy_kwh: float | None = None
    """`--track-energy`: codecarbon's estimate of the training's energy."""
    emissions_g_co2eq: float | None = None
    energy_method: str | None = None
    energy_country: str | None = None
    model: str = ""
    """What the run started from (hub name, folder, tiny build or derived student)."""
    label_names: list = field(default_factory=list)
    dev_predictions: dict | None = None
    """The best evaluation's predictions on the first dev split with their gold labels
    (`kdlora.metrics.kept_predictions`): what the report's paired tests between runs read. None for a run that never
    evaluated (and in results from before they were kept)."""
    positive_label: str | None = None
    """Tasks scored by binary F1: the class F1 counts as positive."""
    test_metrics: dict | None = None
    """`--test-file`: the best checkpoint's metrics on the test split, scored once after training (in fp32)."""
    lora_targets: list | None = None
    """LoRA methods: the modules the adapters sit on."""
    trained_modules: list | None = None
    """LoRA methods: the modules trained in full beside the adapters (the task head)."""
    method_details: dict | None = None
    """What the method records about itself beyond its settings (AdaLoRA: its rank budget, initial to final)."""
    teacher_logits: dict | None = None
    """`{"source": "cache" | "computed" | "online", "fingerprint": ..., "precision": ...}` for a distilling run."""
    teacher_resident: bool = False
    """Whether the teacher ran beside the student on every batch and its memory is in `peak_memory_mb` (hidden-state
    or attention-map distillation)."""
    hidden_distillation: dict | None = None
    """Hidden-state / attention-map distillation: `terms` (what is matched, weights, layer map), `layer_map`
    (student:teacher) and `projection_params` (the trained projections', not in the saved model nor the counts)."""
    run_key: str = ""
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, name: str):
        """Read a field by name, as from the metrics.json dict."""
        return getattr(self, name)


def _loaders(config, task, tokenizer, data):
    import torch
    from torch.utils.data import DataLoader

    from kdlora.data.encode import Collator, encode

    collate = Collator(tokenizer, task.regression)
    features = encode(data["train"], tokenizer, config.max_length)
    if "transfer" in data:  # shuffled in with the labelled examples: an epoch is a pass over both
        features = with_transfer(features, encode(data["transfer"].examples, tokenizer, config.max_length))
    # the loader's own generator (its worker seed draws) keeps the global RNG, which dropout uses, untouched
    lengths = [len(f["input_ids"]) for f in features] if config.group_by_length else None
    order = EpochShuffle(len(features), config.seed, lengths, config.batch_size)
    train = DataLoader(features, batch_size=config.batch_size, sampler=order,
                       generator=torch.Generator().manual_seed(config.seed), collate_fn=collate)
    devs = {split: DataLoader(encode(examples, tokenizer, config.max_length), batch_size=max(64, config.batch_size),
                              collate_fn=collate)
            for split, examples in data.items() if split in task.dev_splits}
    return train, devs


def score_test(model, config, task, tokenizer, examples, accelerator) -> dict:
    """The best checkpoint's metrics on the test split, scored once after training (never used to select)."""
    from torch.utils.data import DataLoader

    from kdlora.data.encode import Collator, encode

    loader = DataLoader(encode(examples, tokenizer, config.max_length), batch_size=max(64, config.batch_size),
                        collate_fn=Collator(tokenizer, task.regression))
    return evaluate(model, {"test": accelerator.prepare(loader)}, task, accelerator).metrics


def score_in_fp32(model, dev_loaders: dict, task, accelerator):
    """The model's dev `Evaluation` in fp32, outside the autocast accelerate wrapped its forward in (what `predict`
    and `export` compute); the wrapper is gone from `model` afterwards."""
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    return evaluate(model, {split: accelerator.prepare(loader) for split, loader in dev_loaders.items()}, task,
                    accelerator)


def load_data(config, task) -> dict:
    """The training examples and every dev split, subsampled as the config says, and the test split and the
    transfer data (`transfer`: a `kdlora.data.transfer.Transfer`) where the run has them."""
    from kdlora.data.loaders import load_split

    split = load_split(task, "train", config.data_dir)
    data = {"train": split.subset(config.max_train_samples, config.seed)}
    transfer = load_transfer(config, task, split, data["train"])
    if transfer is not None:
        data["transfer"] = transfer
    for split in task.dev_splits:
        data[split] = load_split(task, split, config.data_dir).subset(config.max_eval_samples, DEV_SUBSET_SEED)
    if task.files is not None and "test" in task.files.splits():
        data["test"] = load_split(task, "test")  # read now: a bad test split fails before training, not after
    return data


def taught_examples(data: dict):
    """The examples the teacher labels: the labelled training examples, and the transfer data's beside them."""
    return data["train"].plus(data["transfer"].examples) if "transfer" in data else data["train"]


def teacher_precision(config) -> str:
    """What a distilling run's teacher computes its logits in: `teacher_precision`, or the run's own for auto."""
    return config.precision if config.teacher_precision == AUTO else config.teacher_precision


def teacher_source_for(config, task, train_examples, device, progress: bool, student=None, kept=None):
    """The source of teacher logits for a distilling method: a cached table, or the model run per batch, over
    `train_examples` (the transfer data's too: one cache per teacher, each row by its id and digest). Given the
    `student` (hidden-state distillation), the model run per batch and matched to it (`.match`, a
    `kdlora.hidden.HiddenMatch`; `kept`: the teacher layers a derived student was cut from)."""
    from kdlora.hidden import HiddenMatch
    from kdlora.train.start import check_teacher, teacher_identity
    from kdlora.train.teacher import OnlineTeacher, cached_teacher_logits

    check_teacher(config.teacher, *teacher_identity(config.teacher), task)
    if student is not None:
        source = OnlineTeacher(config.teacher, train_examples, config.max_length, device, teacher_precision(config))
        source.model.requires_grad_(False)
        source.match = HiddenMatch.between(config, source.model, student, kept)
        return source
    if config.online_teacher:
        return OnlineTeacher(config.teacher, train_examples, config.max_length, device, teacher_precision(config))
    return cached_teacher_logits(config.teacher, train_examples, task.name, "train", config.max_length,
                                 device=device, progress=progress, precision=teacher_precision(config))


def _hidden_record(match) -> dict:
    """What a run records of its hidden-state match (`TrainResult.hidden_distillation`)."""
    from kdlora.hidden import format_map

    projected = sum(p.numel() for p in match.projections.parameters()) if match.projections is not None else 0
    return {"terms": match.describe(), "layer_map": format_map(match.pairs), "projection_params": projected}


def check_before_work(config: TrainConfig, out_dir: Path, method, architecture, verify: bool = True,
                      resume: bool = False, overwrite: bool = False) -> None:
    """Everything that can be checked before data or models load, each failure one UserError: the settings the
    hardware and the installed extras can run, a finished run or checkpoints in the way (or missing for `resume`),
    the output folder, the teacher (given and whole) and the weights package."""
    import torch

    from kdlora.files import check_writable
    from kdlora.meters import require_energy
    from kdlora.modeling import quiet_peft_deprecation
    from kdlora.precision import check_precision
    from kdlora.rundir import check_run, is_run_folder

    quiet_peft_deprecation()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible")
    check_precision(config.precision, config.device)
    if method.distills:
        check_precision(teacher_precision(config), config.device)
    tracking.require_trackers(config.trackers)
    if config.track_energy:
        require_energy()
    finished = next((name for name in ("metrics.json", "run.json") if (out_dir / name).exists()), None)
    if resume and overwrite:
        raise UserError("--resume continues the run in --out, --overwrite replaces it: pass one")
    if finished and not overwrite:
        raise UserError(f"{out_dir} holds a finished run ({finished}): pass --overwrite to replace it, or choose "
                        "a fresh --out" + (" (--resume continues an interrupted run only)" if resume else ""))
    if resume:
        checkpoint.resume_source(out_dir, config.key())
    elif config.save_checkpoints and not overwrite and checkpoint.has_checkpoint(out_dir):
        raise UserError(f"{checkpoint.checkpoint_dir(out_dir)} holds a checkpoint: pass --resume to continue that "
                        f"run, or choose a fresh --out")
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


def run_training(config: TrainConfig, out_dir: str | Path, progress: bool = True, verify: bool = True,
                 resume: bool = False, overwrite: bool = False, should_stop=None) -> TrainResult:
    """Train one run and write `out_dir/metrics.json` plus the model (FFT) or adapter (LoRA methods).

    A run whose loss went non-finite has status "collapsed" and a reason instead of raising; constant dev
    predictions are `flags` of a done run. Bad settings raise UserError; a damaged teacher folder too (unless not
    `verify`: then only what cannot be loaded). `resume` continues from the run's checkpoint in
    `out_dir/checkpoints` (written with `save_checkpoints`). A finished run in `out_dir` is a UserError unless
    `overwrite`: then its files are replaced when the new run is saved, and its checkpoints removed now.
    `should_stop(score, step) -> bool` hears every dev evaluation and may stop the run early (a search's pruner: see
    `kdlora.train.loop.fit`).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    from kdlora.families import get_family
    from kdlora.hidden import attach, detach, is_on
    from kdlora.meters import (
        left_out_of_peak,
        release_freed_memory,
        restart_peak,
        track_energy,
        track_memory,
        warm_up_runtime,
    )
    from kdlora.methods import get_method
    from kdlora.modeling import adaptation, name_labels
    from kdlora.params import count_parameters
    from kdlora.precision import ACCELERATE_MIXED_PRECISION
    from kdlora.rundir import environment, save_run
    from kdlora.train.start import starting_model

    out_dir = Path(out_dir)
    method = get_method(config.method)
    family = get_family(config.family) if config.model is None else None
    check_before_work(config, out_dir, method, family.architecture(method.role) if family else None, verify, resume,
                      overwrite)
    if overwrite:  # the replaced run's checkpoints: another run's, in the way of this one's
        shutil.rmtree(checkpoint.checkpoint_dir(out_dir), ignore_errors=True)
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    task = config.task_spec()
    # accelerate keeps its precision and accumulation settings in process-wide singletons; a process that trains
    # several runs (demo, a local sweep) gives each its own (the distributed PartialState is kept)
    AcceleratorState._reset_state()
    GradientState._reset_state()
    accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=ACCELERATE_MIXED_PRECISION[config.precision],
                              gradient_accumulation_steps=config.grad_accum,
                              **tracking.accelerator_options(config.trackers, out_dir))
    set_seed(config.seed)
    data = load_data(config, task)
    # hidden-state distillation: the teacher runs beside the student, loaded inside the measured block (below)
    resident = method.distills and is_on(config)
    teacher_started = time.perf_counter()
    teacher_source = None
    if method.distills and not resident:
        with accelerator.main_process_first():  # the others then read what the main process cached
            teacher_source = teacher_source_for(config, task, taught_examples(data), accelerator.device, progress)
    teacher_seconds = time.perf_counter() - teacher_started
    if family is not None:  # the libraries in memory before the baseline (any encoder: its first load counts)
        warm_up_runtime(family.architecture(method.role), str(accelerator.device))
    # dev scoring's libraries (about 100 MB) too: imported at the first evaluation they were in every run's figure
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401
    release_freed_memory()
    with track_memory(str(accelerator.device)) as memory:
        start = starting_model(config, task, family, method)
        model, tokenizer, base = start.model, start.tokenizer, start.base
        name_labels(model, task.label_names)  # saved models name their classes (teacher checks read them)
        train_loader, dev_loaders = _loaders(config, task, tokenizer, data)
        # accelerate gives each process its share of the batches; AdaLoRA's schedule needs the step count up front
        total_steps = optimiser_steps(math.ceil(len(train_loader) / accelerator.num_processes), config)
        where = adaptation(model, start.missing, config.lora_targets) if method.uses_lora else None
        model = method.prepare(model, where, config, total_steps)
        # what loading left behind (a derived student's teacher, cut from and dropped) is not the run's cost
        release_freed_memory()
        restart_peak(str(accelerator.device))
        counts = count_parameters(model, method)
        if resident:
            teacher_started = time.perf_counter()
            teacher_source = teacher_source_for(config, task, taught_examples(data), accelerator.device, progress,
                                                model, start.kept)
            teacher_seconds += time.perf_counter() - teacher_started
            attach(model, teacher_source.match)  # its projections train with the student, outside its counts
        started = time.perf_counter()
        try:
            with track_energy(config.track_energy) as energy:
                outcome = fit(model, train_loader, dev_loaders, task, method, teacher_source, config, accelerator,
                              progress, out_dir, resume, outside_measure=lambda: left_out_of_peak(memory),
                              should_stop=should_stop)
        finally:
            accelerator.end_training()
        seconds = time.perf_counter() - started
        detach(outcome.get("model"))
    best, last = outcome["best"], outcome["last"]
    fp32 = None
    if config.precision != "fp32" and outcome.get("model") is not None:  # then test scores in fp32 too
        fp32 = score_in_fp32(outcome["model"], dev_loaders, task, accelerator)
    test = None
    if "test" in data and outcome.get("model") is not None:
        test = score_test(outcome["model"], config, task, tokenizer, data["test"], accelerator)
    result = TrainResult(
        status="collapsed" if outcome["reason"] else "done", reason=outcome["reason"],
        flags=(prediction_flags(*best.predictions, task.regression) if best else [])
        + (["pruned"] if outcome.get("pruned_at_step") else []),
        task=task.name, family=config.family, method=method.name, rank=config.rank, seed=config.seed,
        metrics=best.metrics if best else {}, score=best.score if best else None,
        last_metrics=last.metrics if last else {}, last_score=last.score if last else None,
        last_flags=prediction_flags(*last.predictions, task.regression) if last else [],
        trainable_params=counts.trainable, total_params=counts.total, adapter_params=counts.adapter,
        train_seconds=round(seconds, 3), teacher_logit_seconds=round(teacher_seconds, 3),
        peak_memory_mb=round(memory.peak_mb, 1), memory_kind=memory.kind,
        best_epoch=outcome["best_epoch"], best_step=outcome["best_step"], steps=outcome["steps"],
        warmup_steps=outcome["warmup_steps"], history=outcome["history"], learning_rate=config.lr,
        train_examples=len(data["train"]), transfer_examples=len(data.get("transfer") or ()),
        transfer_source=data["transfer"].source if "transfer" in data else None, precision=config.precision,
        dev_precision=config.precision,
        fp32_metrics=fp32.metrics if fp32 else None, fp32_score=fp32.score if fp32 else None,
        effective_batch_size=config.batch_size * config.grad_accum * accelerator.num_processes,
        resumed_at_step=outcome["resumed_at_step"] if resume else None,
        cost_covers="after resume" if resume else "whole run",
        energy_kwh=energy.kwh, emissions_g_co2eq=energy.g_co2eq, energy_method=energy.method or None,
        energy_country=energy.country or None,
        model=start.description, label_names=list(task.label_names), test_metrics=test,
        dev_predictions=kept_predictions(task, next(iter(dev_loaders)), *best.predictions) if best else None,
        positive_label=task.positive_label,
        lora_targets=list(where.lora_targets) if where else None,
        trained_modules=list(where.head_modules) if where else None,
        method_details=method.record(outcome["model"], config) if outcome.get("model") is not None else None,
        teacher_logits={"source": teacher_source.source, "fingerprint": teacher_source.fingerprint,
                        "precision": teacher_precision(config)} if teacher_source else None,
        teacher_resident=resident, hidden_distillation=_hidden_record(teacher_source.match) if resident else None,
        run_key=config.key(accelerator.num_processes), config=config.to_dict(),
        environment={**environment(accelerator), "precision": config.precision,
                     "mixed_precision": accelerator.mixed_precision})
    if accelerator.is_main_process:
        save_run(out_dir, result.to_dict(), method.saved(outcome.get("model")), tokenizer, base, task.num_labels)
    accelerator.wait_for_everyone()
    return result
