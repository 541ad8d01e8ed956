import json

import pytest

from kdlora.data.encode import Collator, encode, tiny_tokenizer
from kdlora.data.examples import Examples
from kdlora.data.loaders import load_split
from kdlora.data.snippets import MIN_ABS_RATING, extract_snippets, split_of
from kdlora.data.tasks import GLUE_TASKS, TASKS, get_task
from kdlora.errors import UserError
from train_helpers import DATA, SNIPPETS, fake_snippets_archive, install_fake_snippets


def test_task_table_has_the_nine_glue_tasks_and_the_snippets():
    assert GLUE_TASKS == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
    assert set(TASKS) - set(GLUE_TASKS) == {"movie-snippets", "movie-snippets-rating"}
    assert get_task("STS-B").regression and get_task("movie-snippets-rating").regression
    assert get_task("mnli").dev_splits == ("validation_matched", "validation_mismatched")
    assert get_task("cola").metric == "mcc" and get_task("qqp").metric == "accuracy_f1"
    with pytest.raises(UserError, match="unknown task 'imdb'"):
        get_task("imdb")


def test_glue_tsv_with_header_and_string_labels():
    dev = load_split(get_task("mnli"), "validation_mismatched", DATA / "mnli")
    assert len(dev) == 6 and dev.ids == list(range(6))
    assert dev.labels[:3] == [0.0, 1.0, 2.0]  # entailment, neutral, contradiction
    assert len(dev.texts[0]) == 2


def test_cola_tsv_has_no_header_and_positional_columns():
    train = load_split(get_task("cola"), "train", DATA / "cola")
    assert len(train) == 12 and train.labels[:2] == [0.0, 1.0]
    assert train.texts[0][0] == (DATA / "cola" / "train.tsv").read_text().splitlines()[0].split("\t")[3]


def test_glue_root_folder_is_searched_for_the_task_folder(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\nfine\t1\n")
    assert load_split(get_task("sst2"), "train", tmp_path).labels == [1.0]


def test_csv_and_jsonl_with_named_columns(tmp_path):
    (tmp_path / "train.csv").write_text('sentence1,sentence2,label\n"a, b",c,1\nd,e,0\n')
    (tmp_path / "validation.jsonl").write_text(json.dumps({"sentence1": "x", "sentence2": "y", "label": 1}) + "\n")
    task = get_task("rte")
    assert load_split(task, "train", tmp_path).texts == [("a, b", "c"), ("d", "e")]
    assert load_split(task, "validation", tmp_path).labels == [1.0]


def test_missing_column_and_bad_labels_are_user_errors(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nhello,1\n")
    with pytest.raises(UserError, match=r"train.csv: missing column\(s\) sentence for task sst2"):
        load_split(get_task("sst2"), "train", tmp_path)
    (tmp_path / "train.csv").write_text("sentence,label\nhello,2\n")
    with pytest.raises(UserError, match="example 0 has label 2.0 outside the range of task sst2"):
        load_split(get_task("sst2"), "train", tmp_path)
    (tmp_path / "train.csv").write_text("sentence1,sentence2,label\na,b,7.5\n")
    with pytest.raises(UserError, match="outside the range of task stsb"):
        load_split(get_task("stsb"), "train", tmp_path)
    with pytest.raises(UserError, match="no validation file for task sst2"):
        load_split(get_task("sst2"), "validation", tmp_path)


def test_subset_is_seeded_and_keeps_ids():
    examples = Examples(list(range(100, 120)), [(str(i),) for i in range(20)], [0.0] * 20)
    a, b = examples.subset(5, seed=1), examples.subset(5, seed=1)
    assert a.ids == b.ids and len(a) == 5 and set(a.ids) <= set(examples.ids)
    assert [int(t[0]) + 100 for t in a.texts] == a.ids
    assert examples.subset(None, seed=1) is examples


def test_fake_snippets_archive_extracts_and_splits_deterministically(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path))
    install_fake_snippets(tmp_path)
    binary, rating = get_task("movie-snippets"), get_task("movie-snippets-rating")
    splits = {s: load_split(rating, s) for s in ("train", "validation", "test")}
    assert sum(len(s) for s in splits.values()) == len(SNIPPETS)
    for name, examples in splits.items():
        assert all(split_of(str(i)) == name for i in examples.ids)
    train = load_split(binary, "train")
    by_id = {i: r for i, r, _ in SNIPPETS}
    assert all(abs(by_id[i]) >= MIN_ABS_RATING for i in train.ids)
    assert all(label == float(by_id[i] > 0) for i, label in zip(train.ids, train.labels, strict=True))
    assert len(train) == sum(1 for i in splits["train"].ids if abs(by_id[i]) >= MIN_ABS_RATING)


def test_snippets_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path))
    archive, _ = fake_snippets_archive(tmp_path)
    with pytest.raises(UserError, match="does not match the expected 5d7c06e0"):
        extract_snippets(archive)


def test_encoding_pads_per_batch_and_keeps_ids():
    tokenizer = tiny_tokenizer()
    examples = Examples([7, 3, 9], [("good",), ("a very very long bad movie",), ("film",)], [1.0, 0.0, 1.0])
    features = encode(examples, tokenizer, max_length=8)
    assert [f["idx"] for f in features] == [7, 3, 9]
    assert len(features[1]["input_ids"]) == 8  # truncated
    assert encode(examples, tokenizer, max_length=8) is features  # tokenised once
    batch = Collator(tokenizer, regression=False)([features[0], features[2]])
    assert batch["input_ids"].shape[1] == max(len(features[0]["input_ids"]), len(features[2]["input_ids"]))
    assert batch["idx"].tolist() == [7, 9] and batch["labels"].dtype.is_floating_point is False


def test_unreachable_hub_says_how_to_use_local_files():
    # conftest keeps the hub offline, so the hub path must fail with a one-line hint
    with pytest.raises(UserError, match="cannot load GLUE sst2/train from the hub .*pass --data-dir"):
        load_split(get_task("sst2"), "train")
