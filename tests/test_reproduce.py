"""`kdlora reproduce` end to end with the real train and bench code on tiny models (no fakes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kdlora.store import Store

TESTS = Path(__file__).parent
SST2 = TESTS / "data" / "train" / "sst2"  # the train area's tiny GLUE TSV files

EXPERIMENT = f"""
name = "tiny-real"
[train]
tasks = ["sst2"]
families = ["bert"]
ranks = [4]
seeds = [1]
[train.params]
tiny = true
epochs = 1
batch_size = 8
max_length = 32
device = "cpu"
data_dir = "{SST2}"
[bench]
families = ["bert"]
ranks = [4, 8]
params_only = true
tiny = true
"""


@pytest.mark.slow
def test_reproduce_with_real_backends(tmp_path):
    exp = tmp_path / "tiny.toml"
    exp.write_text(EXPERIMENT)
    command = [sys.executable, "-m", "kdlora", "reproduce", str(exp), "--out", str(tmp_path / "reports"),
               "--db", str(tmp_path / "r.db"), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "sweep tiny-real: 4 runs: ran 4 (" in done.stdout, done.stderr[-3000:]
    with Store(tmp_path / "r.db", readonly=True) as store:
        runs = store.runs(kind="train")
        # tiny random models on 24 sentences often predict one label: a flag of a done run, counted in the report
        assert [r.status for r in runs] == ["done", "done", "done"], [r.reason for r in runs]
        flagged = sum("constant_predictions" in (r.result or {}).get("flags", []) for r in runs)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert sum(results["runs"]["train"].values()) == 3 and results["runs"]["bench"] == {"done": 1}
    bench = json.loads((tmp_path / "reports" / "bench" / "bench.json").read_text())
    assert {(r["method"], r["rank"]) for r in bench["rows"]} == {("fft", None), ("lora", 4), ("lora", 8),
                                                                 ("kd-lora", 4), ("kd-lora", 8)}
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "## Quality: Table I (measured)" in report and "## Trade-off: score next to cost" in report
    assert f"{flagged} of 3 train runs predict one constant class or value on dev" in report
    # a params-only bench has no memory or time: its counts are written, the Table II analysis skipped with the reason
    assert (tmp_path / "reports" / "bench" / "params.csv").exists()
    assert "It was not analysed: the bench counted parameters only" in report
    # the same command again runs nothing and keeps every run
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "4 runs: ran 0 (none), 4 already done" in again.stdout
    with Store(tmp_path / "r.db", readonly=True) as store:
        assert {r.attempts for r in store.runs()} == {1}
