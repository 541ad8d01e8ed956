import dataclasses

import pytest

from kdlora.config import RunSettings, TrainConfig
from kdlora.errors import UserError


def test_from_dict_normalises_names_and_round_trips():
    config = TrainConfig.from_dict({"task": "SST-2", "family": "BERT", "method": "kd_lora", "rank": "16"})
    assert (config.task, config.family, config.method, config.rank) == ("sst2", "bert", "kd-lora", 16)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_key_is_stable_and_covers_every_field():
    a = TrainConfig(task="sst2", family="bert", method="lora")
    b = TrainConfig.from_dict(a.to_dict())
    assert a.key() == b.key() and len(a.key()) == 64
    assert dataclasses.replace(a, seed=43).key() != a.key()
    assert dataclasses.replace(a, max_length=64).key() != a.key()


@pytest.mark.parametrize("values, message", [
    ({"rank": 0}, "bad value for rank: 0"),
    ({"kd_alpha": 1.5}, "bad value for kd_alpha: 1.5"),
    ({"epochs": "three"}, "epochs must be int, got 'three'"),
    ({"tiny": "yes"}, "tiny must be true or false"),
    ({"rank": 2.5}, "rank must be a whole number"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"method": "kd-adalora", "target_rank": 9}, "bad value for target_rank: 9"),  # above the initial rank 8
    ({"task": "imdb"}, "unknown task 'imdb'"),
    ({"student_init": "random"}, "bad value for student_init: 'random'"),
])
def test_bad_values_name_key_and_value(values, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.from_dict({"task": "sst2", "family": "bert", "method": "kd-lora", **values})


def test_missing_key_is_named():
    with pytest.raises(UserError, match="missing key 'method'"):
        TrainConfig.from_dict({"task": "sst2", "family": "bert"})


def test_learning_rate_default_depends_on_method_and_data_size():
    assert TrainConfig(task="sst2", family="bert", method="fft").lr == 2e-5
    assert TrainConfig(task="movie-snippets", family="minilm", method="kd-lora").lr == 3e-3
    # a method's default is its own (the registry's), so a new method needs no entry in a table elsewhere
    assert TrainConfig(task="movie-snippets", family="minilm", method="student-lora").lr == 3e-3
    assert TrainConfig(task="movie-snippets", family="minilm", method="dora").lr == 2e-3
    assert TrainConfig(task="sst2", family="bert", method="fft", learning_rate=1e-3).lr == 1e-3


def test_every_setting_has_a_docstring_for_the_cli():
    from kdlora.methods import settings_classes
    from kdlora.settings import field_docs

    docs = field_docs(RunSettings, *settings_classes())
    assert set(docs) == set(TrainConfig.setting_names())
    assert all(len(text) > 10 for text in docs.values())


def test_the_run_key_covers_the_number_of_processes_and_is_the_stores_key():
    """Finding: two processes (twice the effective batch) and one process shared a key; the store used its own."""
    from kdlora.config import TrainConfig
    from kdlora.experiment import parse_experiment
    from kdlora.keys import run_key
    from kdlora.sweep.backends import REAL
    from kdlora.sweep.expand import expand

    config = TrainConfig(task="sst2", family="bert", method="fft", tiny=True)
    assert config.key() == config.key(1) != config.key(2)
    assert config.key() != TrainConfig(task="sst2", family="bert", method="fft", tiny=True, batch_size=16).key()
    [spec] = expand(parse_experiment('[train]\ntasks = ["sst2"]\nfamilies = ["bert"]\nmethods = ["fft"]\n'
                                     '[train.params]\ntiny = true\n'), REAL)
    config = TrainConfig.from_dict(spec.config)
    assert spec.key == config.key() == run_key("train", config.identity(), 1)


def test_watching_a_run_does_not_change_its_key():
    from kdlora.config import TrainConfig

    plain = TrainConfig(task="sst2", family="bert", method="lora", tiny=True)
    watched = TrainConfig(task="sst2", family="bert", method="lora", tiny=True, save_checkpoints=True,
                          report_to="tensorboard", track_energy=True)
    assert plain.key() == watched.key()
    assert plain.key() != TrainConfig(task="sst2", family="bert", method="lora", tiny=True, grad_accum=2).key()
    assert plain.key() != plain.key(num_processes=2)
