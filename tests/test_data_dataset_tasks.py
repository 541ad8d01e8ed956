"""`--dataset NAME[:CONFIG]`: a local dataset folder (save_to_disk, or a folder of data files) through the same
labelling as a task from files, chosen splits and slices, keys by the splits' fingerprints, one-line errors."""

import json
import shutil

import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from kdlora.api import train_run
from kdlora.cli import main
from kdlora.config import TrainConfig
from kdlora.data.dataset_tasks import name_and_config, task_name
from kdlora.data.loaders import load_split
from kdlora.experiment import parse_experiment
from kdlora.sweep.backends import REAL
from kdlora.sweep.expand import expand

GOOD = ["a good film", "very good", "great great", "the movie is great"]
BAD = ["a bad film", "very bad", "bad bad", "the movie is bad"]
# ClassLabel order on purpose not sorted: "pos" is class 0, and must stay so
FEATURES = Features(text=Value("string"), label=ClassLabel(names=["pos", "neg"]))


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`load_dataset` writes Arrow files into the datasets cache: a test's own, not the user's."""
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def saved(folder, train_rows=None):
    """A DatasetDict written by save_to_disk: train (8 rows, GOOD then BAD) and validation (2 rows)."""
    train_rows = train_rows or [(t, 0) for t in GOOD] + [(t, 1) for t in BAD]
    splits = {"train": train_rows, "validation": [("good", 0), ("bad", 1)]}
    DatasetDict({name: Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                         features=FEATURES) for name, rows in splits.items()}).save_to_disk(folder)
    return folder


def files_folder(folder, suffix=".csv"):
    """A folder of train / validation data files with string labels (what `load_dataset(folder)` reads)."""
    folder.mkdir(parents=True)
    rows = {"train": [(t, "thumbs up") for t in GOOD] + [(t, "thumbs down") for t in BAD],
            "validation": [("good", "thumbs up"), ("bad", "thumbs down")]}
    for split, values in rows.items():
        frame = pd.DataFrame(values, columns=["review", "verdict"])
        path = folder / f"{split}{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".jsonl":
            frame.to_json(path, orient="records", lines=True)
        else:
            frame.to_parquet(path)
    return folder


def config(dataset, **values):
    values = {"task": task_name(str(dataset)), "text_columns": "text", **values}
    return TrainConfig(family="bert", method="fft", tiny=True, dataset=str(dataset), **values)


def train(tmp_path, capsys, *flags, method="fft"):
    capsys.readouterr()  # what writing the dataset printed
    code = main(["train", *flags, "--family", "bert", "--tiny", "--method", method, "--epochs", "1",
                 "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")])
    return code, capsys.readouterr()


def test_a_save_to_disk_folder_keeps_its_class_label_names_in_their_order(tmp_path):
    task = config(saved(tmp_path / "reviews")).task_spec()
    assert task.name == "reviews" and task.label_names == ("pos", "neg") and task.num_labels == 2
    examples = load_split(task, "train")
    assert examples.texts == [(t,) for t in GOOD + BAD]
    assert examples.labels == [0.0] * 4 + [1.0] * 4  # the ClassLabel ids as they are, not re-sorted
    assert examples.ids == list(range(8))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_folder_of_data_files_labels_like_a_task_from_files(tmp_path, suffix):
    folder = files_folder(tmp_path / "reviews", suffix)
    task = config(folder, text_columns="review", label_column="verdict").task_spec()
    assert task.label_names == ("thumbs down", "thumbs up")  # strings: sorted, as a file task's
    examples = load_split(task, "validation")
    assert examples.texts == [("good",), ("bad",)] and examples.labels == [1.0, 0.0]


def test_a_sliced_split_keeps_each_rows_id_in_the_named_split(tmp_path):
    task = config(saved(tmp_path / "reviews"), train_split="train[:75%]", validation_split="train[75%:]").task_spec()
    # 8 training rows: the first 75 % are rows 0..5, the rest rows 6 and 7 (two BAD sentences, class 1 "neg")
    assert load_split(task, "train").ids == [0, 1, 2, 3, 4, 5]
    dev = load_split(task, "validation")
    assert dev.ids == [6, 7] and dev.texts == [(BAD[2],), (BAD[3],)] and dev.labels == [1.0, 1.0]


def test_the_key_follows_the_splits_fingerprints_not_the_folders_name(tmp_path):
    key = config(saved(tmp_path / "a"), task="reviews").key()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert config(tmp_path / "b", task="reviews").key() == key  # save_to_disk's fingerprint travels with the data
    other = saved(tmp_path / "c", [(t, 0) for t in GOOD] + [(t, 1) for t in BAD[:3]])
    assert config(other, task="reviews").key() != key
    assert config(tmp_path / "a", task="reviews", validation_split="train[75%:]").key() != key
    identity = config(tmp_path / "a").identity()
    assert "dataset" not in identity and len(identity["dataset_fingerprint"]) == 64


def test_train_predict_and_keep_the_names_through_the_cli(tmp_path, capsys):
    code, _ = train(tmp_path, capsys, "--dataset", str(saved(tmp_path / "reviews")), "--text-columns", "text",
                    "--test-split", "validation", method="lora")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert code == 0 and metrics["task"] == "reviews" and metrics["label_names"] == ["pos", "neg"]
    assert set(metrics["test_metrics"]) == {"accuracy", "macro_f1"}
    assert main(["predict", str(tmp_path / "run"), "a good film"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("pos", "neg")


def test_the_api_takes_a_dataset(tmp_path):
    result = train_run(tmp_path / "run", "fft", dataset=files_folder(tmp_path / "reviews"), family="bert",
                       tiny=True, text_columns=["review"], label_column="verdict", epochs=1, device="cpu")
    assert result.task == "reviews" and result.label_names == ["thumbs down", "thumbs up"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--validation-split", "dev"], "--dataset {d}: no split 'dev' for --validation-split (has: train, validation)"),
    (["--text-columns", "review"], "{d}[train]: column 'review': no such column (has: text, label)"),
    (["--text-columns", ""], "--dataset needs --text-columns (and --label-column unless it is `label`)"),
    (["--label-column", "stars"], "{d}[train]: column 'stars': no such column (has: text, label)"),
    (["--train-split", "train+validation"], "--train-split 'train+validation': one split, with or without a slice "
                                            "(has: train, validation)"),
    (["--validation-file", "dev.csv"], "--validation-file and --dataset: choose one (--dataset takes "
                                       "--validation-split)"),
])
def test_a_missing_split_or_column_is_one_line_naming_what_the_dataset_has(tmp_path, capsys, flags, message):
    folder = saved(tmp_path / "reviews")
    defaults = ["--text-columns", "text"] if "--text-columns" not in flags else []
    code, out = train(tmp_path, capsys, "--dataset", str(folder), *defaults, *flags)
    assert code == 2 and out.err == f"kdlora train: error: {message.format(d=folder)}\n"
    assert not (tmp_path / "run").exists()


def test_an_unlabelled_split_and_split_flags_without_a_dataset(tmp_path, capsys):
    folder = tmp_path / "unlabelled"
    DatasetDict(train=Dataset.from_dict({"text": ["good", "bad"], "label": [0, -1]}, features=FEATURES),
                validation=Dataset.from_dict({"text": ["good"], "label": [0]}, features=FEATURES)).save_to_disk(folder)
    code, out = train(tmp_path, capsys, "--dataset", str(folder), "--text-columns", "text")
    assert code == 2 and out.err == (f"kdlora train: error: {folder}[train]: row 2, column 'label': no label (-1); "
                                     "an unlabelled split cannot train or score\n")
    code, out = train(tmp_path, capsys, "--task", "sst2", "--validation-split", "test")
    assert code == 2 and out.err == "kdlora train: error: --validation-split needs --dataset\n"


def test_name_and_config():
    assert name_and_config("nyu-mll/glue:sst2") == ("nyu-mll/glue", "sst2")
    assert name_and_config("imdb") == ("imdb", None)
    assert task_name("nyu-mll/glue:sst2") == "glue-sst2" and task_name("imdb") == "imdb"


def test_an_experiment_task_from_a_dataset_folder_beside_the_file(tmp_path):
    saved(tmp_path / "data" / "reviews")
    text = """
[tasks.reviews]
dataset = "data/reviews"
text_columns = ["text"]
[train]
tasks = ["reviews"]
families = ["bert"]
methods = ["fft"]
[train.params]
tiny = true
"""
    (tmp_path / "exp.toml").write_text(text)
    experiment = parse_experiment(text, str(tmp_path / "exp.toml"))
    assert experiment.tasks["reviews"]["dataset"] == str(tmp_path / "data" / "reviews")
    [spec] = expand(experiment, REAL)
    assert spec.key == config(tmp_path / "data" / "reviews").key()  # the folder found beside the file
