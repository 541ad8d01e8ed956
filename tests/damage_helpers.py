"""Shared by the damage tests: the pristine folders kdlora writes (built once per session), and ways to damage
a file and to compare a tree of files before and after."""

from __future__ import annotations

import os
from pathlib import Path

from train_helpers import tiny_config


def build_pristine(root: Path) -> Path:
    """A tiny run of each method (fft, lora, kd-lora distilled from the fft run), two exports of the kd-lora run
    (safetensors; onnx int8), the teacher-logit cache (root/cache) and a results store with one run
    (root/store/r.db)."""
    from kdlora.export import ExportSettings, export_run
    from kdlora.store import Store
    from kdlora.train import run_training

    before = os.environ.get("KDLORA_CACHE")
    os.environ["KDLORA_CACHE"] = str(root / "cache")
    try:
        run_training(tiny_config(method="fft"), root / "fft", progress=False)
        run_training(tiny_config(method="lora"), root / "lora", progress=False)
        run_training(tiny_config(method="kd-lora", teacher=str(root / "fft")), root / "kd-lora", progress=False)
    finally:
        if before is None:
            os.environ.pop("KDLORA_CACHE")
        else:
            os.environ["KDLORA_CACHE"] = before
    export_run(root / "kd-lora", root / "export")
    export_run(root / "kd-lora", root / "export-onnx", ExportSettings(format="onnx", quantize="int8"))
    with Store(root / "store" / "r.db") as store:
        config = {"task": "sst2", "family": "bert", "method": "fft", "seed": 1}
        store.start("k1", "train", "train sst2 bert fft s1", config, str(root / "fft"), config)
        store.finish("k1", {"status": "done", "metrics": {"accuracy": 0.5}, "score": 0.5})
    return root


def damage(path: Path, how: str, garble_at: float = 0.5) -> None:
    """Delete, cut to half, empty, or garble `path`: 16 bytes inverted at `garble_at` of its length."""
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        at = int(len(data) * garble_at)
        path.write_bytes(data[:at] + bytes(b ^ 0xFF for b in data[at:at + 16]) + data[at + 16:])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes (SQLite's shared-memory index aside: readers write it)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm")}
