"""A task from the user's files: four formats, label mapping, and every bad input as one line through the CLI."""

import json

import pandas as pd
import pytest

from kdlora.cli import main
from kdlora.config import TrainConfig
from kdlora.data.file_tasks import FileTaskSpec, file_task, load_file_split
from kdlora.data.loaders import load_split
from kdlora.errors import UserError
from kdlora.metrics import compute_metrics

ROWS = [("a good film", "pos"), ("a bad film", "neg"), ("it is not good", "neutral"), ("very good", "pos")]


def write(path, rows, columns=("review", "sentiment")):
    frame = pd.DataFrame(rows, columns=list(columns))
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(columns, r, strict=True))) + "\n" for r in rows))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_examples_with_sorted_string_labels(tmp_path, suffix):
    train = write(tmp_path / f"train{suffix}", ROWS)
    spec = FileTaskSpec(str(train), str(train), ("review",), "sentiment")
    task = file_task("reviews", spec)
    assert task.label_names == ("neg", "neutral", "pos") and task.num_labels == 3 and task.metric == "accuracy"
    examples = load_file_split(spec, "validation", task.label_names, task.regression)
    assert examples.texts == [(text,) for text, _ in ROWS]
    assert examples.labels == [2.0, 0.0, 1.0, 2.0]


def test_integer_classes_sort_by_value_and_decimal_labels_are_regression(tmp_path):
    stars = write(tmp_path / "stars.csv", [("a", 10), ("b", 2), ("c", 1), ("d", 2)])
    task = file_task("stars", FileTaskSpec(str(stars), str(stars), ("review",), "sentiment"))
    assert task.label_names == ("1", "2", "10")
    scores = write(tmp_path / "scores.jsonl", [("a", 0.5), ("b", 2.25), ("c", 1)])
    task = file_task("scores", FileTaskSpec(str(scores), str(scores), ("review",), "sentiment"))
    assert task.regression and task.metric == "pearson_spearman" and task.label_names == ()
    assert load_file_split(task.files, "train", (), True).labels == [0.5, 2.25, 1.0]


def test_metric_and_task_type_must_fit(tmp_path):
    train = write(tmp_path / "train.csv", ROWS)
    with pytest.raises(UserError, match="--metric f1 needs two classes"):
        file_task("r", FileTaskSpec(str(train), str(train), ("review",), "sentiment", metric="f1"))
    with pytest.raises(UserError, match="not a metric of a classification task"):
        file_task("r", FileTaskSpec(str(train), str(train), ("review",), "sentiment", metric="pearson_spearman"))
    with pytest.raises(UserError, match=r"row 1, column 'sentiment': label 'pos' is not a number"):
        file_task("r", FileTaskSpec(str(train), str(train), ("review",), "sentiment", task_type="regression"))


def test_the_store_key_follows_the_files_content_not_their_names(tmp_path):
    a = write(tmp_path / "a.csv", ROWS)
    b = write(tmp_path / "b.csv", ROWS)
    values = dict(task="reviews", family="bert", method="fft", text_columns="review", label_column="sentiment")
    key_a = TrainConfig(**values, train_file=str(a), validation_file=str(a)).key()
    assert TrainConfig(**values, train_file=str(b), validation_file=str(b)).key() == key_a
    write(b, ROWS[:3])
    assert TrainConfig(**values, train_file=str(b), validation_file=str(b)).key() != key_a


def _train(tmp_path, capsys, train, dev, *extra):
    code = main(["train", "--train-file", str(train), "--validation-file", str(dev), "--text-columns", "review",
                 "--label-column", "sentiment", "--family", "bert", "--tiny", "--method", "fft", "--device", "cpu",
                 "--quiet", "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    return err


def test_validation_label_unseen_in_training(tmp_path, capsys):
    train, dev = write(tmp_path / "train.csv", ROWS), write(tmp_path / "dev.csv", [*ROWS[:2], ("meh", "mixed")])
    err = _train(tmp_path, capsys, train, dev)
    assert (f"{dev}: row 3, column 'sentiment': label 'mixed' does not occur in the training file {train} "
            "(its labels: neg, neutral, pos)") in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_empty_text(tmp_path, capsys, suffix):
    train, dev = write(tmp_path / "train.csv", ROWS), write(tmp_path / f"dev{suffix}", [ROWS[0], ("", "pos")])
    assert f"{dev}: row 2, column 'review': empty text" in _train(tmp_path, capsys, train, dev)


def test_missing_column(tmp_path, capsys):
    train = write(tmp_path / "train.csv", ROWS, columns=("text", "sentiment"))
    err = _train(tmp_path, capsys, train, train)
    assert f"{train}: header row, column 'review': no such column (has: text, sentiment)" in err


def test_empty_label_in_training(tmp_path, capsys):
    train = write(tmp_path / "train.csv", [*ROWS, ("fine", "")])
    assert f"{train}: row 5, column 'sentiment': empty label" in _train(tmp_path, capsys, train, train)


def test_file_that_does_not_parse(tmp_path, capsys):
    train = write(tmp_path / "train.csv", ROWS)
    broken = tmp_path / "dev.csv"
    broken.write_text('review,sentiment\n"a good film",pos\n"unclosed,pos,extra,fields\n')
    assert f"{broken}: cannot parse as CSV" in _train(tmp_path, capsys, train, broken)
    lines = tmp_path / "dev.jsonl"
    lines.write_text('{"review": "good", "sentiment": "pos"}\n{"review": "bad", "sentiment": \n')
    assert f"{lines}: row 2: cannot parse as JSONL" in _train(tmp_path, capsys, train, lines)


def test_incomplete_file_settings(tmp_path, capsys):
    train = write(tmp_path / "train.csv", ROWS)
    code = main(["train", "--train-file", str(train), "--text-columns", "review", "--family", "bert", "--tiny",
                 "--method", "fft", "--out", str(tmp_path / "run")])
    assert code == 2 and "--train-file needs --validation-file" in capsys.readouterr().err
    code = main(["train", "--task", "sst2", "--label-column", "y", "--family", "bert", "--method", "fft",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "--label-column needs --train-file" in capsys.readouterr().err


def test_a_tsv_text_that_starts_with_a_quote_stays_one_row(tmp_path):
    # a TSV has no quoting (GLUE's neither): with CSV quoting rows 1-3 merged into one text, with no error
    rows = [('"great" is the word', "pos"), ("a bad film", "neg"), ('"so-so', "neutral"), ('very "good"', "pos")]
    train = tmp_path / "train.tsv"
    train.write_text("review\tsentiment\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    task = file_task("quotes", FileTaskSpec(str(train), str(train), ("review",), "sentiment"))
    examples = load_split(task, "train")
    assert examples.texts == [(text,) for text, _ in rows]
    assert examples.labels == [2.0, 0.0, 1.0, 2.0]


BINARY = [("a good film", "pos"), ("a bad film", "neg"), ("very good", "pos"), ("very bad", "neg")]


def test_f1_counts_the_positive_label_it_is_given_and_says_which(tmp_path):
    train = write(tmp_path / "train.csv", BINARY)
    labels, predictions = [0, 0, 0, 1], [0, 0, 1, 1]  # 0 = neg, 1 = pos (sorted)
    default = file_task("r", FileTaskSpec(str(train), str(train), ("review",), "sentiment", metric="f1"))
    assert default.positive_label == "pos"  # the second label in sorted order
    # pos: 1 true positive, 1 false positive, no false negative: F1 = 2 * 1 / (2 * 1 + 1 + 0)
    assert compute_metrics(default, predictions, labels)["f1"] == pytest.approx(2 / 3)
    neg = file_task("r", FileTaskSpec(str(train), str(train), ("review",), "sentiment", metric="f1",
                                      positive_label="neg"))
    assert neg.positive_label == "neg"
    # neg: 2 true positives, no false positive, 1 false negative: F1 = 2 * 2 / (2 * 2 + 0 + 1)
    assert compute_metrics(neg, predictions, labels)["f1"] == pytest.approx(4 / 5)


def test_the_train_output_names_f1s_positive_class(tmp_path, capsys):
    train = write(tmp_path / "train.csv", BINARY)
    code = main(["train", "--train-file", str(train), "--validation-file", str(train), "--text-columns", "review",
                 "--label-column", "sentiment", "--family", "bert", "--tiny", "--method", "fft", "--device", "cpu",
                 "--epochs", "1", "--quiet", "--metric", "f1", "--positive-label", "neg", "--out",
                 str(tmp_path / "run")])
    assert code == 0
    assert "f1: positive class 'neg' (--positive-label to choose another)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["positive_label"] == "neg"


def test_a_positive_label_that_is_not_a_label_or_without_f1(tmp_path, capsys):
    train = write(tmp_path / "train.csv", BINARY)
    err = _train(tmp_path, capsys, train, train, "--metric", "f1", "--positive-label", "good")
    assert f"--positive-label 'good': not a label of {train} (its labels: neg, pos)" in err
    err = _train(tmp_path, capsys, train, train, "--positive-label", "neg")
    assert "--positive-label 'neg': only --metric f1 has a positive class" in err
