"""A task from files declared in an experiment (`[tasks.NAME]`): swept, stored and reported like a built-in one."""

import shutil

import pytest

from kdlora.cli import main
from kdlora.errors import UserError
from kdlora.experiment import load_experiment, parse_experiment
from kdlora.store import Store
from kdlora.sweep.backends import REAL
from kdlora.sweep.expand import expand

EXPERIMENT = """
name = "reviews"
[tasks.reviews]
train_file = "data/train.csv"
validation_file = "data/dev.csv"
text_columns = ["review"]
label_column = "verdict"
[train]
tasks = ["reviews"]
families = ["bert"]
methods = ["fft", "lora"]
ranks = [4]
seeds = [1]
[train.params]
tiny = true
epochs = 1
batch_size = 8
device = "cpu"
"""
ROWS = "review,verdict\n" + "good,thumbs up\nbad,thumbs down\nvery good,thumbs up\nvery bad,thumbs down\n" * 3


def _experiment(folder):
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text(ROWS)
    (folder / "data" / "dev.csv").write_text(ROWS)
    (folder / "reviews.toml").write_text(EXPERIMENT)
    return folder / "reviews.toml"


def test_paths_are_the_experiment_files_and_keys_follow_the_data(tmp_path):
    specs = expand(load_experiment(_experiment(tmp_path / "a")), REAL)
    assert [s.label for s in specs] == ["train reviews bert fft s1", "train reviews bert lora r4 s1"]
    assert specs[0].config["train_file"] == str(tmp_path / "a" / "data" / "train.csv")
    assert specs[0].config["text_columns"] == "review"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert [s.key for s in expand(load_experiment(tmp_path / "b" / "reviews.toml"), REAL)] == [s.key for s in specs]
    (tmp_path / "b" / "data" / "train.csv").write_text(ROWS + "great,thumbs up\n")
    moved = expand(load_experiment(tmp_path / "b" / "reviews.toml"), REAL)
    assert not {s.key for s in moved} & {s.key for s in specs}


@pytest.mark.parametrize(("table", "message"), [
    ("[tasks.sst2]\ntrain_file = 'a.csv'", "'sst2' is a built-in task"),
    ("[tasks.mine]\ntrain_file = 'a.csv'", "[tasks.mine] needs `validation_file`"),
    ("[tasks.mine]\ntrain_files = 'a.csv'", "unknown key '[tasks.mine] train_files'"),
])
def test_bad_task_tables_name_the_key(table, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_experiment("[train]\ntasks = ['mine']\nfamilies = ['bert']\n" + table, "x.toml")


def test_sweep_and_report_use_it_like_a_built_in_task(tmp_path, capsys):
    experiment = _experiment(tmp_path)
    db = str(tmp_path / "r.db")
    assert main(["sweep", str(experiment), "--db", db, "--no-progress"]) == 0  # done or collapsed: both kept
    with Store(db, readonly=True) as store:
        runs = store.runs(kind="train")
        assert {(r.task, r.method) for r in runs} == {("reviews", "fft"), ("reviews", "lora")}
        assert all(r.status in ("done", "collapsed") for r in runs)
        assert all(r.result["label_names"] == ["thumbs down", "thumbs up"] for r in runs)
    assert main(["report", "--db", db, "--out", str(tmp_path / "report"), "--experiment", str(experiment)]) == 0
    assert "reviews" in (tmp_path / "report" / "report.md").read_text()
