"""One bench configuration in a fresh process: `python -m kdlora.bench.worker '{"family": "bert", ...}'`.

A fresh process per configuration is what makes a CPU peak RSS the configuration's own. The worker builds the
model, runs the method's real training step (AdamW; KD-LoRA's KD loss against cached teacher logits, the teacher
not resident) while tracking peak memory, then times the evaluation set unmerged (LoRA methods) and merged. It
prints one JSON line: the measurements, or `{"error": ...}` when the configuration failed.
"""

from __future__ import annotations

import json
import sys
import time

from kdlora import modeling
from kdlora.bench import evalset
from kdlora.bench.trackers import LatencyResult, track_latency, track_memory
from kdlora.families import get_family, model_pair
from kdlora.methods import get_method


def train_batch(batch_size: int, seq_len: int, vocab_size: int, num_labels: int, seed: int, device) -> dict:
    """A full-length training batch with labels and cached teacher logits (random: the cost is the same)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    low = evalset.first_plain_id(vocab_size)
    return {
        "input_ids": torch.randint(low, vocab_size, (batch_size, seq_len), generator=gen).to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long).to(device),
        "labels": torch.randint(0, num_labels, (batch_size,), generator=gen).to(device),
        "teacher_logits": torch.randn(batch_size, num_labels, generator=gen).to(device),
    }


def train_step(model, optimizer, method, batch: dict) -> float:
    """One optimiser step of `method` on `batch`; returns its wall seconds."""
    import torch

    start = time.perf_counter()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = method.loss(out.logits, batch["labels"], teacher_logits=batch["teacher_logits"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_eval(model, batches: list[dict], device: str, warmup: int = 1) -> LatencyResult:
    """Run every batch once after `warmup` untimed batches; the result holds each batch's time."""
    import torch

    model.eval()
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    with torch.inference_mode():
        for batch in batches[:warmup]:
            model(**batch)
        with track_latency(device) as timer:
            for batch in batches:
                with timer.batch(len(batch["input_ids"])):
                    model(**batch)
    return timer.result


def warm_up_runtime(arch, device: str) -> None:
    """Import the model's code and start PyTorch's kernels, autograd and AdamW on a toy layer, so that the memory
    baseline taken next already holds the libraries: the peak delta is then the configuration's own."""
    import peft  # noqa: F401 - imported for its memory, before the baseline
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    AutoModelForSequenceClassification  # noqa: B018 - the lazy module loads on first use
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(arch.config(tiny=True))]
    layer = torch.nn.Linear(8, 2).to(device)
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.randn(4, 8, device=device)).softmax(-1).sum().backward()
    optimizer.step()


def measure(job: dict) -> dict:
    """Every measurement of one (family, method, rank) configuration."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    device, method = job["device"], get_method(job["method"])
    if job.get("model"):
        model_pair(job["model"], job.get("student"))  # a pair is registered per process
    family = get_family(job["family"])
    warm_up_runtime(family.architecture(method.role), device)
    with track_memory(device) as memory:
        arch, base = modeling.build_base(family, method, job["num_labels"], job["pretrained"], job["tiny"])
        model = modeling.prepare(base, method, job["rank"]).to(device)
        model.train()
        vocab = model.config.vocab_size
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        # a short step first allocates AdamW's state, so the measured steps see the steady-state footprint
        train_step(model, optimizer, method, train_batch(2, 8, vocab, job["num_labels"], job["seed"], device))
        step_seconds = [train_step(model, optimizer, method,
                                   train_batch(job["batch_size"], job["train_seq_len"], vocab, job["num_labels"],
                                               job["seed"] + step, device))
                        for step in range(job["train_steps"])]
    del optimizer
    lengths = evalset.eval_lengths(job["eval_size"], job["seed"])
    batches = evalset.eval_batches(lengths, job["eval_batch_size"], vocab, job["pad_to"], job["group_by_length"],
                                   job["seed"])
    result = {"peak_train_memory_mb": round(memory.peak_mb, 1), "memory_kind": memory.kind,
              "train_step_seconds": round(min(step_seconds), 4), "threads": torch.get_num_threads(),
              "eval_tokens": evalset.padded_tokens(batches), "eval_seconds_unmerged": None}
    if method.uses_lora:
        result["eval_seconds_unmerged"] = round(time_eval(model, batches, device).total_seconds, 4)
        model = modeling.merged(model)
    latency = time_eval(model, batches, device)
    result.update(eval_seconds=round(latency.total_seconds, 4), latency_ms_p50=round(latency.p50_ms, 2),
                  latency_ms_p90=round(latency.p90_ms, 2), throughput_per_s=round(latency.throughput_per_s, 2))
    return result


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    try:
        result = measure(job)
    except Exception as exc:  # one failed configuration (e.g. out of memory) must not lose the others
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        result = {"error": f"{type(exc).__name__}: {first_line}"}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
