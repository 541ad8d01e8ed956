"""Run keys that new settings cannot change: a store written before keeps every key, and a plug-in that brings a
setting of its own changes no other method's key (`kdlora.config`: a setting enters a key only where the run reads
it, away from its default, unless every key held it from the start)."""

import json
import shutil
from pathlib import Path

import pytest

from kdlora.cli import main
from kdlora.config import FIRST_KEYED, TrainConfig
from kdlora.errors import UserError
from kdlora.experiment import load_experiment
from kdlora.store import Store
from kdlora.sweep.backends import REAL
from kdlora.sweep.expand import expand

OLD = Path(__file__).parent / "data" / "old-store"


def test_a_store_written_before_keeps_every_key(tmp_path, capsys):
    """tests/data/old-store holds 66 runs (8 methods at ranks 8 and 16, two seeds, a built-in task and a file task,
    non-default LoRA alpha, KD settings, AdaLoRA target rank and positive label; two bench rows) keyed by kdlora at
    commit a903e0c, when every method's settings were in every run's key. Today's kdlora finds each of them."""
    old_keys = json.loads((OLD / "keys.json").read_text())
    specs = expand(load_experiment(OLD / "experiment.toml"), REAL)
    assert len(specs) == len(old_keys) == 2 * 2 * (2 + 7 * 2) + 2  # tasks x seeds x (FFT lrs + 7 methods x ranks)
    assert {s.label: s.key for s in specs} == old_keys
    db = tmp_path / "results.db"
    shutil.copy(OLD / "results.db", db)
    with Store(db) as store:
        assert store.statuses() == {key: "done" for key in old_keys.values()}
    assert main(["sweep", str(OLD / "experiment.toml"), "--db", str(db), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "66 runs" and all(line.split()[1] == "done" for line in lines[:-1])


def test_a_setting_enters_a_key_only_where_the_run_reads_it_away_from_its_default():
    fft = TrainConfig(task="sst2", family="bert", method="fft", tiny=True)
    assert set(FIRST_KEYED) | {"use_dora"} == set(fft.identity())  # every key holds these, as it always did
    # AdaLoRA's budget is read by AdaLoRA runs only: an FFT or LoRA run given one is the same run
    assert TrainConfig(task="sst2", family="bert", method="fft", tiny=True, target_rank=2).key() == fft.key()
    lora = TrainConfig(task="sst2", family="bert", method="lora", tiny=True)
    assert TrainConfig(task="sst2", family="bert", method="lora", tiny=True, orth_reg_weight=0.1).key() == lora.key()
    adalora = TrainConfig(task="sst2", family="bert", method="adalora", tiny=True)
    assert "target_rank" not in adalora.identity()  # at its default: out
    assert TrainConfig(task="sst2", family="bert", method="adalora", tiny=True, target_rank=2).identity()[
        "target_rank"] == 2


def test_a_method_checks_only_the_settings_it_reads():
    """Finding: every method's checks ran on every run, so LoRA at rank 2 was refused for AdaLoRA's default target
    rank 4 ("bad value for target_rank: 4"), a setting LoRA never reads."""
    assert TrainConfig(task="sst2", family="bert", method="lora", rank=2).rank == 2
    with pytest.raises(UserError, match="bad value for target_rank: 4"):
        TrainConfig(task="sst2", family="bert", method="adalora", rank=2)


def test_a_plug_in_brings_its_own_setting_flag_and_key_and_changes_no_other_key(toy, capsys):
    """The toy method (tests/toy_method.py) registers a settings class of its own, `toy_penalty`."""
    before = TrainConfig(task="sst2", family="bert", method="fft", tiny=True).key()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--toy-penalty TOY_PENALTY Toy-LoRA: weight of the L2 penalty on the adapter weights. (default: 0.001)" \
        in help_text
    assert "toy-lora (Toy-LoRA on the teacher, task loss only)" in help_text  # --method's help is the registry's
    fft = TrainConfig(task="sst2", family="bert", method="fft", tiny=True)
    assert fft.key() == before and fft.toy_penalty == 1e-3
    assert TrainConfig(task="sst2", family="bert", method="fft", tiny=True, toy_penalty=0.5).key() == before
    toy_run = TrainConfig(task="sst2", family="bert", method="toy-lora", tiny=True)
    assert TrainConfig(task="sst2", family="bert", method="toy-lora", tiny=True, toy_penalty=0.5).key() != \
        toy_run.key()
    with pytest.raises(UserError, match="bad value for toy_penalty: -1.0"):
        TrainConfig.from_dict({"task": "sst2", "family": "bert", "method": "toy-lora", "toy_penalty": -1})
