"""The nine GLUE tasks read from files in the exact layout of the original GLUE download (tests/data/glue: a few
real-looking rows each), their labels in the order of the hub's `nyu-mll/glue` (its ClassLabel names)."""

from pathlib import Path

import pytest

from kdlora.data.loaders import load_split
from kdlora.data.tasks import GLUE_TASKS, get_task

GLUE = Path(__file__).parent / "data" / "glue"

# nyu-mll/glue's label names, in label order (regression: none)
HUB_LABELS = {
    "cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"), "stsb": (),
    "mnli": ("entailment", "neutral", "contradiction"), "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"), "wnli": ("not_entailment", "entailment"),
}

# per task: (split, rows, first example's texts, every label) read by hand from the fixture files
EXPECTED = {
    "cola": ("train", ("Our friends won't buy this analysis, let alone the next one we propose.",), [1, 1, 0, 1]),
    "sst2": ("validation", ("it 's a charming and often affecting journey . ",), [1, 0]),
    "mrpc": ("train", ('Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his '
                       'evidence .', 'Referring to him as only " the witness " , Amrozi accused his brother of '
                       'deliberately distorting his evidence .'), [1, 0]),
    "qqp": ("train", ("How is the life of a math student? Could you describe your own experiences?",
                      "Which level of prepration is enough for the exam jlpt5?"), [0, 1]),
    "stsb": ("validation", ("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing."),
             [5.0, 4.75]),
    "mnli": ("validation_mismatched", ("Your contribution helped make it possible for us to provide our students "
                                       "with a quality education.",
                                       "Your contributions were of no help with our students' education."), [2, 1]),
    "qnli": ("validation", ("What came into force after the new constitution was herald?",
                            "As of that day, the new constitution heralding the Second Republic came into force."),
             [0]),
    "rte": ("train", ("No Weapons of Mass Destruction Found in Iraq Yet.",
                      "Weapons of Mass Destruction Found in Iraq."), [1, 0]),
    "wnli": ("validation", ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned."),
             [0, 1]),
}


def test_every_glue_task_has_a_fixture_and_the_hubs_label_order():
    assert set(EXPECTED) == set(GLUE_TASKS)
    for name in GLUE_TASKS:
        assert get_task(name).label_names == HUB_LABELS[name], name


@pytest.mark.parametrize("name", GLUE_TASKS)
def test_original_glue_files_load_with_their_labels(name):
    """Finding: MRPC's byte-order mark made the header `\\ufeffQuality`; five tasks had no fixture at all."""
    task = get_task(name)
    split, first, labels = EXPECTED[name]
    examples = load_split(task, split, GLUE)
    assert examples.labels == [float(v) for v in labels]
    assert examples.ids == list(range(len(labels)))
    assert examples.texts[0] == first and len(first) == len(task.text_fields)
    for split_name in ("train", *task.dev_splits):  # every split of the task reads
        assert len(load_split(task, split_name, GLUE)) >= 1


def test_mnli_train_and_matched_dev_read_the_gold_label_not_label1():
    task = get_task("mnli")
    # train: neutral, entailment, entailment, contradiction; matched dev: gold neutral (label1 neutral),
    # gold contradiction
    assert load_split(task, "train", GLUE).labels == [1.0, 0.0, 0.0, 2.0]
    assert load_split(task, "validation_matched", GLUE).labels == [1.0, 2.0]
