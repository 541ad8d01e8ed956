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


@pytest.fixture
def toy(monkeypatch):
    """The toy method registered here and in every child process (sweep runs, bench workers)."""
    import importlib
    import sys

    from kdlora.methods import METHODS

    monkeypatch.setenv("KDLORA_METHODS", "toy_method")
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    module = importlib.import_module("toy_method")
    yield module.TOY
    METHODS.pop(module.TOY.name)
    sys.modules.pop("toy_method")
