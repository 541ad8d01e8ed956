"""One bench configuration in a fresh process: `python -m kdlora.bench.worker '{"family": "bert", ...}'`.

A fresh process per configuration is what makes a CPU peak RSS the configuration's own. The worker builds the
model, runs the method's real training step (AdamW; KD-LoRA's KD loss against cached teacher logits, the teacher
not resident) while tracking peak memory, then times the evaluation set unmerged (LoRA methods, PyTorch runtime)
and merged, in the job's inference form (`kdlora.bench.forms`: runtime, precision, quantisation; a bf16 job also
trains under bf16 autocast; with `track_energy` codecarbon measures the merged evaluation's energy, also per 1,000
predictions; its matrix FLOP over the real tokens give its MFU against the CPU's peak in its precision,
`kdlora.bench.flops`). It prints one JSON line: the measurements, or `{"error": ...}` when the
configuration failed.
"""

from __future__ import annotations

import json
import sys
import time

from kdlora import modeling
from kdlora.bench import evalset
from kdlora.bench.flops import cpu_peak, forward_flops, matrix_shapes, mfu
from kdlora.bench.forms import DEFAULT_FORM, inference_runner
from kdlora.families import get_family, model_pair
from kdlora.meters import LatencyResult, track_energy, track_latency, track_memory, warm_up_runtime
from kdlora.methods import get_method
from kdlora.precision import autocast


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


def train_step(model, optimizer, method, batch: dict, precision: str = "fp32") -> float:
    """One optimiser step of `method` on `batch` (under `precision`'s autocast); returns its wall seconds."""
    import torch

    start = time.perf_counter()
    device = "cuda" if batch["input_ids"].is_cuda else "cpu"
    with autocast(device, precision):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = method.loss(model, out, batch, teacher_logits=batch["teacher_logits"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if batch["input_ids"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_eval(model, batches: list[dict], device: str, warmup: int = 1, precision: str = "fp32") -> LatencyResult:
    """Run every batch once through a PyTorch model (under `precision`'s autocast) after `warmup` untimed
    batches; the result holds each batch's time."""
    model.eval()
    with autocast(device, precision):
        return time_calls(lambda batch: model(**batch), [{k: v.to(device) for k, v in b.items()} for b in batches],
                          device, warmup)


def time_calls(call, inputs: list, device: str, warmup: int = 1) -> LatencyResult:
    """`call` on every input once after `warmup` untimed ones; the result holds each call's time."""
    import torch

    with torch.inference_mode():
        for batch in inputs[:warmup]:
            call(batch)
        with track_latency(device) as timer:
            for batch in inputs:
                size = len(batch["input_ids"])
                with timer.batch(size):
                    call(batch)
    return timer.result


def eval_utilisation(flops: int, seconds: float, device: str, form: tuple[str, str, str]) -> dict:
    """`eval_mfu` and `eval_peak`: the evaluation's FLOP/s over this CPU's peak in the form's precision, on the
    threads torch uses; None on a GPU or for a quantised form (no peak of its own here)."""
    import torch

    if device != "cpu" or form[2] != "none":
        return {"eval_mfu": None, "eval_peak": None}
    peak = cpu_peak(form[1], torch.get_num_threads())
    value = mfu(flops, seconds, peak.flops)
    return {"eval_mfu": None if value is None else round(value, 5), "eval_peak": peak.describe()}


def measure(job: dict) -> dict:
    """Every measurement of one (family, method, rank) configuration."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    device, method = job["device"], get_method(job["method"])
    if job.get("model"):
        model_pair(job["model"], job.get("student"))  # a pair is registered per process
    form = tuple(job.get(k) or v for k, v in zip(("runtime", "precision", "quantize"), DEFAULT_FORM, strict=True))
    precision = form[1]
    family = get_family(job["family"])
    warm_up_runtime(family.architecture(method.role), device)
    with track_memory(device) as memory:
        arch, base = modeling.build_base(family, method, job["num_labels"], job["load_weights"], job["tiny"])
        model = modeling.prepare(base, method, job["rank"]).to(device)
        model.train()
        vocab = model.config.vocab_size
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        # a short step first allocates AdamW's state, so the measured steps see the steady-state footprint
        train_step(model, optimizer, method, train_batch(2, 8, vocab, job["num_labels"], job["seed"], device),
                   precision)
        step_seconds = [train_step(model, optimizer, method,
                                   train_batch(job["batch_size"], job["train_seq_len"], vocab, job["num_labels"],
                                               job["seed"] + step, device), precision)
                        for step in range(job["train_steps"])]
    del optimizer
    lengths = evalset.eval_lengths(job["eval_size"], job["seed"])
    batches = evalset.eval_batches(lengths, job["eval_batch_size"], vocab, job["pad_to"], job["group_by_length"],
                                   job["seed"])
    result = {"peak_memory_mb": round(memory.peak_mb, 1), "memory_kind": memory.kind,
              "train_step_seconds": round(min(step_seconds), 4), "threads": torch.get_num_threads(),
              "eval_tokens": evalset.padded_tokens(batches), "eval_seconds_unmerged": None}
    if method.uses_lora and form[0] == "pytorch":
        unmerged = time_eval(model, batches, device, precision=precision)
        result["eval_seconds_unmerged"] = round(unmerged.total_seconds, 4)
    if method.uses_lora:
        model = modeling.merged(model)
    model.eval()
    eval_flops = forward_flops(matrix_shapes(model), lengths)
    run, to_inputs, size = inference_runner(model.to(device), form, batches[0], job["threads"])
    inputs = [to_inputs({k: v.to(device) for k, v in b.items()}) for b in batches]
    with track_energy(bool(job.get("track_energy"))) as energy:
        latency = time_calls(run, inputs, device)
    if energy.kwh is not None:
        per_1000 = 1000 / len(lengths)
        result.update(eval_energy_kwh=energy.kwh, eval_g_co2eq=energy.g_co2eq, energy_method=energy.method,
                      eval_wh_per_1000=energy.kwh * 1000 * per_1000, eval_g_co2eq_per_1000=energy.g_co2eq * per_1000)
    result.update(eval_flops=eval_flops, **eval_utilisation(eval_flops, latency.total_seconds, device, form))
    result.update(size_mb=round(size / 1e6, 2), eval_seconds=round(latency.total_seconds, 4),
                  latency_ms_p50=round(latency.p50_ms, 2),
                  latency_ms_p90=round(latency.p90_ms, 2), throughput_per_s=round(latency.throughput_per_s, 2))
    return result


def run_job(job: dict) -> dict:
    """`measure(job)`, or `{"error": "Type: first line"}` when it failed."""
    try:
        return measure(job)
    except Exception as exc:  # one failed configuration (e.g. out of memory) must not lose the others
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return {"error": f"{type(exc).__name__}: {first_line}"}


def main(argv: list[str]) -> int:
    print(json.dumps(run_job(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
