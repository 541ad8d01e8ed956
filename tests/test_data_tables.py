"""kdlora.data.tables: one reader for the file tasks and the GLUE-layout files, the same cells and errors in both."""

import json

import pandas as pd
import pytest

from kdlora.data.file_tasks import FileTaskSpec, file_task, load_file_split
from kdlora.data.loaders import load_split
from kdlora.data.tables import read_table
from kdlora.data.tasks import get_task
from kdlora.errors import UserError

ROWS = [{"sentence": "a good film", "label": 1}, {"sentence": "a bad film", "label": 0},
        {"sentence": '"great", they said', "label": 1}]


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_glue_layout_files_and_file_tasks_read_the_same_examples(tmp_path, suffix):
    _write(tmp_path / f"train{suffix}", ROWS)
    glue = load_split(get_task("sst2"), "train", tmp_path)
    spec = FileTaskSpec(str(tmp_path / f"train{suffix}"), str(tmp_path / f"train{suffix}"), ("sentence",), "label")
    task = file_task("mine", spec)
    own = load_file_split(spec, "train", task.label_names, task.regression)
    assert glue.texts == own.texts == [(r["sentence"],) for r in ROWS]
    assert glue.labels == own.labels == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_an_empty_text_in_a_glue_layout_file_is_an_error_not_the_text_nan(tmp_path, suffix):
    """Finding: the GLUE-layout reader let pandas read an empty cell as NaN and trained on the text "nan"."""
    rows = [ROWS[0], {"sentence": "" if suffix == ".csv" else None, "label": 0}]
    path = _write(tmp_path / f"train{suffix}", rows)
    with pytest.raises(UserError) as caught:
        load_split(get_task("sst2"), "train", tmp_path)
    assert str(caught.value) == f"{path}: row 2, column 'sentence': empty text"


def test_a_tsv_is_read_without_quote_processing(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('review\tsentiment\n"great", they said\tpos\nfine\tneg\n"so so\tneg\n')
    frame = read_table(path)
    assert frame["review"].tolist() == ['"great", they said', "fine", '"so so']
    path.write_text("review\tsentiment\ngood\tpos\textra\n")
    with pytest.raises(UserError) as caught:
        read_table(path)
    assert str(caught.value) == f"{path}: row 1: 3 tab-separated fields where the header has 2"


def test_a_glue_label_outside_the_tasks_labels_names_row_and_column(tmp_path):
    path = _write(tmp_path / "train.csv", [*ROWS, {"sentence": "meh", "label": "maybe"}])
    with pytest.raises(UserError) as caught:
        load_split(get_task("sst2"), "train", tmp_path)
    assert str(caught.value) == f"{path}: row 4, column 'label': label 'maybe' is not one of the task's labels"
