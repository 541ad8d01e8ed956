import pytest

from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.experiment import Resources, load_experiment, parse_experiment

GRID = """
name = "g"
[train]
tasks = ["sst2"]
families = ["bert"]
"""


def test_small_fixture_parses(tmp_path):
    exp = load_experiment("tests/data/sweep/small.toml")
    assert exp.name == "small"
    assert exp.train.tasks == ("sst2",) and exp.train.families == ("bert",)
    assert exp.train.methods == ("fft", "lora", "kd-lora")
    assert exp.train.ranks == (8,) and exp.train.seeds == (1, 2)
    assert exp.train.params == {"epochs": 2}
    assert exp.train.per_method == {"fft": {"learning_rate": 1e-4}}
    assert exp.bench == {"families": ["bert", "roberta"], "ranks": [8]}
    assert exp.resources == Resources(1, 0)


@pytest.mark.parametrize("name, methods", [("default", {"fft", "lora", "kd-lora", "student-lora"}),
                                           ("paper", {"fft", "lora", "kd-lora", "student-lora"})])
def test_bundled_experiments_parse(name, methods):
    exp = load_experiment(name)
    assert exp.name == name and exp.train is not None and exp.bench is not None
    assert set(exp.train.methods) == methods


def test_defaults_and_normalised_names():
    exp = parse_experiment(GRID.replace('["bert"]', '["bert"]\nmethods = ["KD_LoRA", "lora"]'))
    assert exp.train.methods == ("kd-lora", "lora")
    assert exp.train.ranks == (8,) and exp.train.seeds == (42,) and exp.bench is None


@pytest.mark.parametrize("text, message", [
    ("colour = 1\n" + GRID, "unknown key 'colour'"),
    (GRID + "colour = 1\n", "unknown key '[train] colour'"),
    (GRID.replace("[train]", "[train]\nepochs = 3"), "unknown key '[train] epochs'"),
    (GRID + "ranks = [0]\n", "[train] ranks = [0] is not a non-empty list of positive integers"),
    (GRID + 'ranks = ["8"]\n', "[train] ranks = ['8']"),
    (GRID + "seeds = [true]\n", "[train] seeds = [True]"),
    (GRID.replace('["bert"]', '["gpt"]'), "[train.families] unknown family 'gpt'"),
    (GRID + 'methods = ["qlora"]\n', "[train.methods] unknown method 'qlora'"),
    (GRID + "[train.params]\nseed = 3\n", "[train.params] `seed` is set by the grid"),
    (GRID + "[train.per_method.qlora]\nrank = 3\n", "[train.per_method] unknown method 'qlora'"),
    (GRID + "[resources]\nnum_gpus = -1\n", "[resources] num_gpus = -1"),
    (GRID + "[resources]\ncpus = 1\n", "unknown key '[resources] cpus'"),
    (GRID + "params = 3\n", "[train] params = 3 is not a table"),
    (GRID.replace('tasks = ["sst2"]\n', ""), "[train] needs `tasks`"),
    ('name = "x"\n', "neither a [train] nor a [bench] section"),
    (GRID + "[train\n", "not valid TOML"),
])
def test_bad_experiments_name_the_key(text, message):
    with pytest.raises(UserError) as exc:
        parse_experiment(text, "exp.toml")
    assert str(exc.value).startswith("exp.toml: ")
    assert message in str(exc.value)


def test_unknown_file_or_name():
    with pytest.raises(UserError, match="no such experiment file"):
        load_experiment("nope.toml")


@pytest.mark.parametrize("extra, message", [
    ("colour = 1\n", "unknown key '[train] colour'"),
    ("[train.params]\nepochs = 0\n", "[train.params] epochs = 0 is not a positive integer"),
    ("[train.params]\nbogus = 0\n", "[train.params] unknown setting 'bogus'"),
])
def test_sweep_cli_bad_experiment_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setenv("KDLORA_BACKENDS", "fake_backends:BACKENDS")
    monkeypatch.syspath_prepend("tests")
    path = tmp_path / "bad.toml"
    path.write_text(GRID + extra)
    assert main(["sweep", str(path), "--db", str(tmp_path / "r.db"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and message in err


def test_real_backends_validate_and_fill_defaults():
    from kdlora.sweep.backends import real_bench_settings, real_train_config

    config = real_train_config({"task": "SST-2", "family": "bert", "method": "kd_lora", "seed": 3})
    assert (config["task"], config["method"], config["seed"], config["rank"]) == ("sst2", "kd-lora", 3, 8)
    with pytest.raises(UserError, match="epochs"):
        real_train_config({"task": "sst2", "family": "bert", "method": "fft", "epochs": 0})
    settings = real_bench_settings({"families": ["bert"], "ranks": [8, 16]})
    assert settings["families"] == ["bert"] and settings["ranks"] == [8, 16] and settings["eval_size"] == 1043
    with pytest.raises(UserError, match="ranks: 0 is not a positive integer"):
        real_bench_settings({"ranks": [0]})
    with pytest.raises(UserError, match="unknown bench setting 'colour'"):
        real_bench_settings({"colour": 1})


def test_the_paper_grid_is_25_fft_and_24_lora_kd_lora_and_student_lora_configurations():
    """Finding: experiments held one value per setting; the paper's protocol is a grid."""
    from collections import Counter

    from kdlora.experiment import load_experiment
    from kdlora.sweep.backends import REAL
    from kdlora.sweep.expand import expand

    specs = [s for s in expand(load_experiment("paper"), REAL) if s.kind == "train"]
    cell = Counter(s.fields["method"] for s in specs if s.fields["task"] == "rte" and s.fields["family"] == "bert")
    assert cell == {"fft": 25, "lora": 24, "kd-lora": 24, "student-lora": 24}  # student-lora: the ablation
    assert len(specs) == 9 * 3 * (25 + 24 + 24 + 24) and len({s.key for s in specs}) == len(specs)
    teachers = {s.needs for s in specs if s.fields["method"] == "kd-lora" and s.fields["task"] == "rte"
                and s.fields["family"] == "bert"}
    [candidates] = teachers  # every KD-LoRA run of the cell distils from the best of FFT's 25 (teacher = "best")
    assert {s.key for s in specs if s.fields["method"] == "fft" and s.fields["task"] == "rte"
            and s.fields["family"] == "bert"} == set(candidates) and len(candidates) == 25


ADAPTIVE = GRID + """
[train.params]
precision = "auto"
max_train_samples = 2000
epochs = 2
[train.per_method.kd-lora]
epochs = 3
[train.by_precision.fp32]
max_train_samples = 800
epochs = 1
"""


@pytest.mark.parametrize(("avx512_bf16", "samples", "fft_epochs"), [(False, 800, 1), (True, 2000, 2)])
def test_by_precision_applies_where_auto_resolves_to_it(monkeypatch, avx512_bf16, samples, fft_epochs):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    grid = parse_experiment(ADAPTIVE).train
    [fft] = grid.configurations("fft")
    [kd] = grid.configurations("kd-lora")
    assert (fft["max_train_samples"], fft["epochs"]) == (samples, fft_epochs)
    assert (kd["max_train_samples"], kd["epochs"]) == (samples, 3)  # per_method wins over by_precision


@pytest.mark.parametrize(("extra", "message"), [
    ("[train.by_precision.int8]\nepochs = 1\n", "[train.by_precision] unknown precision 'int8'"),
    ("[train.by_precision.bf16]\nprecision = 'fp32'\n", "[train.by_precision.bf16] may not set `precision` itself"),
    ("[train.by_precision.fp32]\nseed = 1\n", "[train.by_precision.fp32] `seed` is set by the grid"),
])
def test_by_precision_errors_name_the_table(extra, message):
    with pytest.raises(UserError) as caught:
        parse_experiment(GRID + extra)
    assert message in str(caught.value)


@pytest.mark.parametrize(("avx512_bf16", "expected"), [(False, ("fp32", 800, 400)), (True, ("bf16", 2000, None))])
def test_the_main_job_trains_more_where_bf16_pays(monkeypatch, avx512_bf16, expected):
    import torch

    from kdlora.config import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    grid = load_experiment("default").train
    for method in grid.methods:
        for values in grid.configurations(method):  # KD-LoRA: as the paper, and with transfer data
            config = TrainConfig.from_dict({**values, "task": "movie-snippets", "family": "minilm", "method": method})
            assert (config.precision, config.max_train_samples, config.max_eval_samples) == expected
    assert [c.get("transfer_samples") for c in grid.configurations("kd-lora")] == [0, 2000]
