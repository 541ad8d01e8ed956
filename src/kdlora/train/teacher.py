"""The FFT teacher's logits for KD-LoRA, aligned to the student's batches by example id.

By default the logits are computed once over the training examples and cached (safetensors: ids, logits and a
digest of each example) under a fingerprint of the teacher's weights and tokenizer, the task, the split, the
max length and the precision the teacher ran in (fp32, or bf16 / fp16 autocast: each precision its own file); a
cache with another fingerprint is stale and recomputed. Each cached row is used only for an example
whose digest (its id, texts, label and data source) matches: another data folder, an edited file or hub-vs-local
data recompute the rows that changed. `online=True` runs the teacher on every batch instead.

A teacher trained on another task, or with another number or naming of labels, is refused (`check_teacher`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from kdlora.data.encode import Collator, encode, tokenizer_fingerprint
from kdlora.data.snippets import cache_dir, sha256_file
from kdlora.errors import UserError
from kdlora.train.start import load_teacher, teacher_files


def example_digests(examples) -> list[int]:
    """A 63-bit digest per example of its id, texts, label and the data source (what its teacher logits depend on,
    and what identifies the row)."""
    digests = []
    for i, texts, label in zip(examples.ids, examples.texts, examples.labels, strict=True):
        text = json.dumps([examples.source, i, list(texts), float(label)], ensure_ascii=False)
        digests.append(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1)
    return digests


def examples_fingerprint(examples) -> str:
    """sha256 over every example's digest, in order: the data the logits were computed on."""
    return hashlib.sha256(json.dumps(example_digests(examples)).encode()).hexdigest()


def teacher_fingerprint(run_dir, tokenizer, task: str, split: str, max_length: int, precision: str = "fp32") -> str:
    """sha256 over the teacher's weight files (a run's or a checkpoint's), its tokenizer, what was encoded and the
    precision it ran in (fp32 adds nothing: the fingerprints of caches written before precision counted)."""
    digest = hashlib.sha256()
    for path in teacher_files(run_dir):
        digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    digest.update(f"{tokenizer_fingerprint(tokenizer)}:{task}:{split}:{max_length}".encode())
    if precision != "fp32":
        digest.update(f":{precision}".encode())
    return digest.hexdigest()


class LogitTable:
    """Logits by example id: `lookup(idx)` returns the rows of a batch's ids, in the batch's order.

    `source` says where they came from (`cache` or `computed`), `fingerprint` what they were computed from.
    """

    def __init__(self, ids, logits, digests=None, source: str = "computed", fingerprint: str = ""):
        import torch

        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self.logits = logits
        self.digests = None if digests is None else torch.as_tensor(digests, dtype=torch.long)
        self.source, self.fingerprint = source, fingerprint
        self.position = torch.full((int(self.ids.max()) + 1 if len(self.ids) else 1,), -1, dtype=torch.long)
        self.position[self.ids] = torch.arange(len(self.ids))

    def has(self, ids) -> bool:
        return all(0 <= i < len(self.position) and self.position[i] >= 0 for i in ids)

    def current(self, ids, digests) -> list[bool]:
        """For each id: whether the table holds its row, computed from the example with this digest."""
        found = []
        for i, digest in zip(ids, digests, strict=True):
            at = int(self.position[i]) if 0 <= i < len(self.position) else -1
            found.append(at >= 0 and self.digests is not None and int(self.digests[at]) == digest)
        return found

    def lookup(self, idx):
        import torch

        idx_cpu = idx.cpu()
        known = (idx_cpu >= 0) & (idx_cpu < len(self.position))
        rows = torch.where(known, self.position[idx_cpu.clamp(0, len(self.position) - 1)], -1)
        if (rows < 0).any():
            raise KeyError(f"no teacher logits for example ids {idx[rows < 0].tolist()[:5]}")
        return self.logits[rows].to(idx.device)


def predict_logits(model, features: list[dict], tokenizer, batch_size: int = 64, device=None,
                   precision: str = "fp32"):
    """The model's logits for encoded `features`, in their order (eval mode, no gradients, under `precision`'s
    autocast), as float32."""
    import torch

    from kdlora.precision import autocast

    collate = Collator(tokenizer, regression=True)
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad(), autocast(str(device), precision):
        for start in range(0, len(features), batch_size):
            batch = collate(features[start:start + batch_size])
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "idx")}
            out.append(model(**inputs).logits.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def cached_teacher_logits(run_dir, examples, task: str, split: str, max_length: int, batch_size: int = 64,
                          device=None, progress: bool = True, precision: str = "fp32") -> LogitTable:
    """The teacher run's logits for `examples` computed in `precision` (stored float32): cached rows whose example
    digest matches, the rest computed (and added to the cache). The table's `source` is `cache` when nothing had to
    be computed."""
    import torch
    from safetensors.torch import save_file

    tokenizer = load_teacher(run_dir, tokenizer_only=True)[1]
    fingerprint = teacher_fingerprint(run_dir, tokenizer, task, split, max_length, precision)
    digests = example_digests(examples)
    used = hashlib.sha256(f"{fingerprint}:{examples_fingerprint(examples)}".encode()).hexdigest()
    where = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
    apart = "" if precision == "fp32" else f"-{precision}"  # fp32's name as before precision counted
    path = cache_dir() / "teacher-logits" / f"{task}-{split}-{where}{apart}.safetensors"
    table = _read_cache(path, fingerprint, progress) if path.is_file() else None
    current = table.current(examples.ids, digests) if table is not None else [False] * len(examples)
    if all(current):
        return LogitTable(table.ids, table.logits, table.digests, source="cache", fingerprint=used)
    missing = [row for row, ok in enumerate(current) if not ok]
    subset = type(examples)([examples.ids[r] for r in missing], [examples.texts[r] for r in missing],
                            [examples.labels[r] for r in missing], examples.source)
    model = load_teacher(run_dir)[0]
    if device is not None:
        model.to(device)
    logits = predict_logits(model, encode(subset, tokenizer, max_length), tokenizer, batch_size,
                            next(model.parameters()).device, precision)
    del model
    ids = torch.tensor(subset.ids, dtype=torch.long)
    new_digests = torch.tensor([digests[r] for r in missing], dtype=torch.long)
    if table is not None:  # keep the other cached rows (other subsets), replace the stale ones
        keep = ~torch.isin(table.ids, ids)
        ids = torch.cat([table.ids[keep], ids])
        logits = torch.cat([table.logits[keep], logits])
        new_digests = torch.cat([table.digests[keep], new_digests])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")  # several accelerate processes may write at once
    logits = logits.contiguous()
    save_file({"ids": ids, "logits": logits, "digests": new_digests}, str(partial),
              metadata={"fingerprint": fingerprint, "content_sha256": _content_digest(ids, logits, new_digests)})
    partial.replace(path)
    return LogitTable(ids, logits, new_digests, source="computed", fingerprint=used)


def _content_digest(ids, logits, digests) -> str:
    """sha256 of the cached tensors' bytes: safetensors itself would load garbled numbers without a word."""
    digest = hashlib.sha256(ids.numpy().tobytes())
    digest.update(logits.float().numpy().tobytes())
    digest.update(digests.numpy().tobytes())
    return digest.hexdigest()


def _read_cache(path: Path, fingerprint: str, progress: bool) -> LogitTable | None:
    """The cached table at `path` when it is whole and its fingerprint matches; else None, with a line saying why
    (a damaged cache is recomputed, never a traceback)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("fingerprint") == fingerprint and "content_sha256" in metadata:  # else older: stale
            data = load_file(str(path))
            if "digests" in data:  # else written before caches kept each example's digest: stale
                if metadata["content_sha256"] != _content_digest(data["ids"], data["logits"], data["digests"]):
                    raise ValueError("its ids and logits are not those written")
                return LogitTable(data["ids"], data["logits"], data["digests"])
    except Exception as exc:  # a truncated, emptied or garbled file: whatever safetensors or torch makes of it
        print(f"teacher-logit cache {path} is damaged ({type(exc).__name__}: {str(exc)[:80]}): recomputing",
              file=sys.stderr)
        return None
    if progress:
        print(f"teacher-logit cache {path} is stale (teacher, tokenizer or max length changed): recomputing",
              file=sys.stderr)
    return None


class OnlineTeacher:
    """Runs the teacher model on every batch (under `precision`'s autocast): the batch's ids select the teacher's own
    encoding of each example. With hidden-state distillation it is resident beside the student for the whole run
    (`match`, set by the run: a `kdlora.hidden.HiddenMatch`), and `outputs` gives its hidden states and attention
    maps too."""

    match = None

    def __init__(self, run_dir, examples, max_length: int, device=None, precision: str = "fp32"):
        self.model, self.tokenizer = load_teacher(run_dir)
        if device is not None:
            self.model.to(device)
        self.features = {f["idx"]: f for f in encode(examples, self.tokenizer, max_length)}
        self.collate = Collator(self.tokenizer, regression=True)
        self.source, self.precision = "online", precision
        self.fingerprint = hashlib.sha256(
            f"{teacher_fingerprint(run_dir, self.tokenizer, 'online', 'train', max_length, precision)}:"
            f"{examples_fingerprint(examples)}".encode()).hexdigest()

    def lookup(self, idx):
        return self.outputs(idx).logits.float().to(idx.device)

    def outputs(self, idx, student_input_ids=None, **options):
        """The teacher's outputs for the batch's ids (eval mode, no gradients; `options`: `output_hidden_states`,
        `output_attentions`), on the device of `idx`. With `student_input_ids`, states are compared position by
        position: a UserError when the teacher's encoding of the batch is not the student's."""
        import torch

        from kdlora.precision import autocast

        batch = self.collate([self.features[int(i)] for i in idx])
        if student_input_ids is not None and not torch.equal(batch["input_ids"], student_input_ids.cpu()):
            raise UserError("hidden-state distillation matches the teacher's and the student's states token by "
                            f"token, but the two tokenise the batch of example {int(idx[0])} differently: they need "
                            "one tokenizer")
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.no_grad(), autocast(str(device), self.precision):
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "idx")}
            outputs = self.model(**inputs, **options)
        return outputs_on(outputs, idx.device)


def outputs_on(outputs, device):
    """A model's `outputs` with their tensors (and tuples of them: hidden states, attention maps) on `device`."""
    for key, value in outputs.items():
        moved = tuple(t.to(device) for t in value) if isinstance(value, tuple) else value.to(device)
        outputs[key] = moved
    return outputs
