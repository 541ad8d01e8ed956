import os
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Subprocesses the tests start (python -m kdlora, bench workers) import this checkout's package,
# installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """Tiny run folders of each method, an export, a teacher-logit cache and a store (damage_helpers), built once;
    tests copy what they damage."""
    from damage_helpers import build_pristine

    return build_pristine(tmp_path_factory.mktemp("pristine"))
