import os
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Subprocesses the tests start (python -m kdlora, bench workers) import this checkout's package,
# installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
