"""Transfer data (`kdlora.data.transfer`): unlabelled text the teacher labels, on which a distilling student's loss is
the KD term alone (or KD plus the teacher's hard label), shuffled in with the labelled examples; its teacher logits
cached with theirs; its source recorded; its mistakes one line and exit 2; a run without it keyed as before."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from kdlora.cli import main
from kdlora.config import TrainConfig
from kdlora.data.encode import Collator, tiny_tokenizer
from kdlora.data.loaders import load_split
from kdlora.data.tasks import get_task
from kdlora.distill import kd_loss
from kdlora.errors import UserError
from kdlora.methods import get_method
from train_helpers import DATA, tiny_config

torch.set_num_threads(1)

LN3 = math.log(3)
# T = 1, student logits (0, 0): softmax (1/2, 1/2); teacher logits (ln 3, 0): softmax (3/4, 1/4)
KL_A = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
# student (ln 3, 0): (3/4, 1/4); teacher (0, 0): (1/2, 1/2)
KL_B = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
SST2_TRAIN_ROWS = 24
"""tests/data/train/sst2/train.tsv: 24 sentences."""


def test_a_transfer_rows_loss_is_the_kd_term_alone():
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    for label in (0, 1):  # whatever its placeholder label, and whatever alpha: KD alone
        for alpha in (0.5, 0.9):
            loss = kd_loss(student, teacher, torch.tensor([label]), temperature=1.0, alpha=alpha,
                           labelled=torch.tensor([False]))
            assert loss.item() == pytest.approx(KL_A, rel=1e-6)
    # at T = 2 the KD term is KL between softmax(logits / 2), times 4: teacher (sqrt 3, 1) / (1 + sqrt 3)
    p = math.sqrt(3) / (1 + math.sqrt(3))
    kl_t2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    loss = kd_loss(student, teacher, torch.tensor([0]), temperature=2.0, labelled=torch.tensor([False]))
    assert loss.item() == pytest.approx(4 * kl_t2, rel=1e-6)


def test_a_mixed_batch_averages_each_rows_own_loss():
    """Row A labelled (class 0): 0.5 KD + 0.5 CE, CE = -ln(1/2) = ln 2; row B a transfer row: its KD alone."""
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    loss = kd_loss(student, teacher, torch.tensor([0, 1]), temperature=1.0, alpha=0.5,
                   labelled=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(((0.5 * KL_A + 0.5 * math.log(2)) + KL_B) / 2, rel=1e-6)
    # every row labelled: the mask changes nothing (row B, class 1: CE = -ln(1/4) = ln 4)
    both = kd_loss(student, teacher, torch.tensor([0, 1]), temperature=1.0, alpha=0.5,
                   labelled=torch.tensor([True, True]))
    assert both.item() == pytest.approx((0.5 * (KL_A + KL_B) + 0.5 * (math.log(2) + math.log(4))) / 2, rel=1e-6)
    assert both.item() == pytest.approx(kd_loss(student, teacher, torch.tensor([0, 1]), temperature=1.0).item())


def test_a_regression_transfer_row_is_the_squared_gap_to_the_teacher():
    # row 1 labelled 3.0: 0.25 (1 - 0)^2 + 0.75 (1 - 3)^2 = 3.25; row 2 transfer: (2 - 5)^2 = 9
    loss = kd_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [5.0]]), torch.tensor([3.0, float("nan")]),
                   alpha=0.25, regression=True, labelled=torch.tensor([True, False]))
    assert loss.item() == pytest.approx((3.25 + 9.0) / 2)


def test_the_teachers_hard_label_stands_in_for_the_missing_one():
    """A transfer row, teacher (ln 3, 0): its argmax, class 0, is the label: 0.5 KL + 0.5 (-ln 1/2)."""
    method = get_method("kd-lora")
    outputs = SimpleNamespace(logits=torch.tensor([[0.0, 0.0]], requires_grad=True))
    batch = {"labels": torch.tensor([1]), "labelled": torch.tensor([False])}
    settings = SimpleNamespace(temperature=1.0, kd_alpha=0.5, transfer_hard_label=True)
    loss = method.loss(None, outputs, batch, torch.tensor([[LN3, 0.0]]), settings)
    assert loss.item() == pytest.approx(0.5 * KL_A + 0.5 * math.log(2), rel=1e-6)
    settings.transfer_hard_label = False
    soft = method.loss(None, outputs, batch, torch.tensor([[LN3, 0.0]]), settings)
    assert soft.item() == pytest.approx(KL_A, rel=1e-6)
    # regression: the teacher's value, 5.0: 0.25 (2 - 5)^2 + 0.75 (2 - 5)^2 = 9
    outputs = SimpleNamespace(logits=torch.tensor([[2.0]]))
    batch = {"labels": torch.tensor([0.0]), "labelled": torch.tensor([False])}
    loss = method.loss(None, outputs, batch, torch.tensor([[5.0]]),
                       SimpleNamespace(temperature=1.0, kd_alpha=0.25, transfer_hard_label=True), regression=True)
    assert loss.item() == pytest.approx(9.0)


def test_transfer_samples_draws_rows_outside_the_labelled_subset():
    from kdlora.train import load_data

    config = tiny_config("sst2", "minilm", "kd-lora", teacher="t", max_train_samples=10, transfer_samples=5)
    data = load_data(config, config.task_spec())
    labelled, transfer = data["train"], data["transfer"]
    assert len(labelled) == 10 and len(transfer) == 5
    assert not set(labelled.ids) & set(transfer.examples.ids)
    assert transfer.source == "train split: 5 of 14 rows outside the labelled subset"  # 24 - 10 = 14
    # another seed, another draw (and another labelled subset)
    other = load_data(tiny_config("sst2", "minilm", "kd-lora", teacher="t", max_train_samples=10,
                                  transfer_samples=5, seed=7), config.task_spec())
    assert other["transfer"].examples.ids != transfer.examples.ids
    every = load_data(tiny_config("sst2", "minilm", "kd-lora", teacher="t", max_train_samples=10,
                                  transfer_samples="all"), config.task_spec())
    assert sorted(every["train"].ids + every["transfer"].examples.ids) == list(range(SST2_TRAIN_ROWS))
    assert every["transfer"].source == "train split: 14 of 14 rows outside the labelled subset"


@pytest.mark.parametrize("settings, message", [
    (dict(transfer_samples=5), r"^--transfer-samples 5: all 24 examples of the training split are in the labelled "
                               r"subset; set --max-train-samples below 24 to leave some unlabelled$"),
    (dict(transfer_samples=15, max_train_samples=10),
     r"^--transfer-samples 15: the training split has 14 examples outside the labelled 10; pass at most 14, or all$"),
])
def test_transfer_samples_beyond_the_split_is_one_line(settings, message):
    from kdlora.train import load_data

    config = tiny_config("sst2", "minilm", "kd-lora", teacher="t", **settings)
    with pytest.raises(UserError, match=message):
        load_data(config, config.task_spec())


def test_transfer_rows_are_marked_in_the_collated_batch():
    from kdlora.data.encode import encode
    from kdlora.data.transfer import with_transfer

    tokenizer = tiny_tokenizer()
    examples = load_split(get_task("sst2"), "train", DATA / "sst2")
    labelled, transfer = examples.subset(2, 0), examples.subset(3, 1)
    features = with_transfer(encode(labelled, tokenizer), encode(transfer, tokenizer))
    batch = Collator(tokenizer, regression=False)(features)
    assert batch["labelled"].tolist() == [True, True, False, False, False]
    assert batch["labels"].tolist()[2:] == [0, 0, 0]  # withheld
    assert "labelled" not in encode(labelled, tokenizer)[0]  # the shared encoded features are left as they were


def test_settings_rules():
    kd = dict(task="sst2", family="minilm", method="kd-lora", tiny=True)
    assert TrainConfig(**kd, transfer_samples=0).key() == TrainConfig(**kd).key()  # 0 is off: today's key
    assert "transfer_samples" not in TrainConfig(**kd).identity()
    assert TrainConfig.from_dict({**kd, "transfer_samples": "2000"}).transfer_samples == 2000
    assert TrainConfig.from_dict({**kd, "transfer_samples": "All"}).identity()["transfer_samples"] == "all"
    with pytest.raises(UserError, match=r"^--transfer-samples is for a distilling method \(kd-lora, kd-dora, \.\.\.\), "
                                        r"not method lora$"):
        TrainConfig(task="sst2", family="minilm", method="lora", transfer_samples=5)
    with pytest.raises(UserError, match="^--transfer-hard-label needs transfer data"):
        TrainConfig(**kd, transfer_hard_label=True)
    with pytest.raises(UserError, match="^--transfer-file and --transfer-samples: pass one"):
        TrainConfig(**kd, transfer_file="x.csv", transfer_samples=3)
    with pytest.raises(UserError, match="bad value for transfer_samples: 'some'"):
        TrainConfig(**kd, transfer_samples="some")


def test_a_transfer_file_is_keyed_by_its_content(tmp_path):
    kd = dict(task="sst2", family="minilm", method="kd-lora", tiny=True)
    for name, text in (("a.csv", "sentence\ngood\n"), ("b.csv", "sentence\ngood\n"), ("c.csv", "sentence\nbad\n")):
        (tmp_path / name).write_text(text)
    a, b, c = (TrainConfig(**kd, transfer_file=str(tmp_path / n)) for n in ("a.csv", "b.csv", "c.csv"))
    assert a.key() == b.key() != c.key()
    assert "transfer_file" not in a.identity() and "transfer_file_sha256" in a.identity()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from kdlora.train import run_training

    out = tmp_path_factory.mktemp("teacher") / "fft"
    run_training(tiny_config("sst2", "minilm", "fft"), out, progress=False)
    return out


def _kd_args(teacher, out, *extra):
    return ["train", "--task", "sst2", "--family", "minilm", "--method", "kd-lora", "--tiny", "--device", "cpu",
            "--data-dir", str(DATA / "sst2"), "--teacher", str(teacher), "--epochs", "1", "--batch-size", "4",
            "--learning-rate", "1e-3", "--quiet", "--out", str(out), *extra]


def test_a_transfer_file_trains_end_to_end_and_is_recorded(teacher, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    rows = ["a fine film", "dull and slow", "very good", "the movie is bad", "great fun", "not good", "a film"]
    (tmp_path / "unlabelled.csv").write_text("sentence,label\n" + "".join(f"{t},1\n" for t in rows))
    assert main(_kd_args(teacher, tmp_path / "kd", "--transfer-file", str(tmp_path / "unlabelled.csv"),
                         "--max-train-samples", "10")) in (0, 1)  # 1: done, flagged (a tiny model's dev)
    said = capsys.readouterr()
    assert f"{tmp_path / 'unlabelled.csv'}: column 'label' ignored: transfer data is unlabelled" in said.err
    metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert metrics["status"] == "done"
    from kdlora.data.file_tasks import sha256_of

    assert metrics["train_examples"] == 10 and metrics["transfer_examples"] == 7
    assert metrics["transfer_source"] == f"file {tmp_path / 'unlabelled.csv'} (sha256 " \
                                         f"{sha256_of(tmp_path / 'unlabelled.csv')})"
    assert metrics["steps"] == 5  # (10 labelled + 7 transfer) / batch 4, rounded up: one epoch over both
    assert (f"transfer: 7 unlabelled rows the teacher labelled ({metrics['transfer_source']}), beside 10 labelled; "
            "their loss: the KD term alone") in said.out
    card = (tmp_path / "kd" / "README.md").read_text()
    assert (f"- **transfer data**: 7 unlabelled rows the teacher labelled, from {metrics['transfer_source']}; the "
            "student's loss there: KD alone") in card


def test_the_teachers_logits_for_transfer_rows_are_cached_and_reused(teacher, tmp_path, monkeypatch):
    from kdlora.train import load_data, run_training
    from kdlora.train.teacher import cached_teacher_logits

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))

    def kd(name, **extra):
        config = tiny_config("sst2", "minilm", "kd-lora", teacher=str(teacher), max_train_samples=10,
                             transfer_samples="all", **extra)
        return config, run_training(config, tmp_path / name, progress=False)

    config, first = kd("kd-1")
    assert first.teacher_logits["source"] == "computed" and first.transfer_examples == 14
    assert kd("kd-2", transfer_hard_label=True)[1].teacher_logits["source"] == "cache"  # nothing recomputed
    # another seed labels other rows: the same 24 rows hold cached logits whichever are labelled
    assert kd("kd-3", seed=7)[1].teacher_logits["source"] == "cache"
    data = load_data(config, config.task_spec())
    table = cached_teacher_logits(teacher, data["train"].plus(data["transfer"].examples), "sst2", "train",
                                  config.max_length)
    assert table.source == "cache" and sorted(table.ids.tolist()) == list(range(SST2_TRAIN_ROWS))


@pytest.mark.parametrize("name, text, message", [
    ("none.csv", None, "none.csv: file not found"),
    ("empty.csv", "", "empty.csv: empty file (transfer data is rows of text)"),
    ("header.csv", "sentence\n", "header.csv: no data rows"),
    ("review.csv", "review\ngood\n", "review.csv: column 'sentence': no such column (has: review); task sst2 takes "
                                     "one text column (sentence)"),
    ("pair.jsonl", '{"sentence": "good", "sentence2": "fine"}\n',
     "pair.jsonl: column 'sentence2': neither a text column nor the label; task sst2 takes one text column "
     "(sentence) (a file of another task? keep only its text columns)"),
])
def test_a_bad_transfer_file_is_one_line_and_exit_2(teacher, tmp_path, capsys, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    code = main(_kd_args(teacher, tmp_path / "kd", "--transfer-file", str(tmp_path / name)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"kdlora train: error: {tmp_path / message}\n"
    assert not (tmp_path / "kd").exists()


def test_a_pair_tasks_transfer_file_needs_both_texts(tmp_path):
    from kdlora.data.transfer import from_file

    (tmp_path / "one.csv").write_text("sentence1\nhello\n")
    with pytest.raises(UserError, match=r"column 'sentence2': no such column \(has: sentence1\); task mrpc takes two "
                                        r"text columns \(sentence1, sentence2\)$"):
        from_file(tmp_path / "one.csv", get_task("mrpc"), first_id=0)


def test_transfer_for_a_method_that_does_not_distil_is_one_line(tmp_path, capsys):
    code = main(["train", "--task", "sst2", "--family", "minilm", "--method", "student-lora", "--tiny",
                 "--transfer-samples", "all", "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err == ("kdlora train: error: --transfer-samples is for a distilling method (kd-lora, "
                                       "kd-dora, ...), not method student-lora\n")


def test_distillation_trainers_collator_marks_rows_without_a_label():
    from kdlora.hf import DistillationCollator

    tokenizer = tiny_tokenizer()
    features = [{**tokenizer("good"), "label": 1, "idx": 0}, {**tokenizer("bad film"), "label": -100, "idx": 1}]
    batch = DistillationCollator(tokenizer)(features)
    assert batch["labelled"].tolist() == [True, False] and batch["labels"].tolist() == [1, 0]
    assert "labelled" not in DistillationCollator(tokenizer)(features[:1])
