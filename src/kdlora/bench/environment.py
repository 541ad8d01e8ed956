"""Where a measurement was taken: library versions, CPU, GPU, threads and how busy the machine was."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from kdlora.precision import auto_reason


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores), None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_environment(device: str = "cpu") -> dict:
    """The bench.json `environment` block."""
    import torch

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None
    auto, why = auto_reason("cuda" if device.startswith("cuda") else "cpu")
    return {
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "kdlora": _version("kdlora"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "precision_auto": auto,  # what precision auto picks on this device, and why: the run says its choice
        "precision_auto_why": why,
        "load_average_start": load_average(),
    }
