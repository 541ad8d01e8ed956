import pytest
import torch
import torch.nn.functional as F

from kdlora.data.encode import Collator, encode, tiny_tokenizer
from kdlora.data.loaders import load_split
from kdlora.data.tasks import get_task
from kdlora.distill import kd_loss
from kdlora.train.teacher import LogitTable, OnlineTeacher, cached_teacher_logits, predict_logits
from train_helpers import DATA, tiny_config


def test_alpha_zero_is_the_task_loss():
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    assert kd_loss(s, t, y, alpha=0.0) == pytest.approx(F.cross_entropy(s, y).item())


def test_kd_term_is_kl_at_temperature_times_t_squared():
    s, t, y = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    for temp in (1.0, 2.0, 4.0):
        p_t, p_s = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
        kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
        assert kd_loss(s, t, y, temperature=temp, alpha=1.0).item() == pytest.approx(kl.item() * temp**2, rel=1e-5)


def test_regression_path_is_mse_to_teacher_and_label():
    s, t, y = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([3.0, 2.0])
    # mse(s, t) = 0.5, mse(s, y) = 2.0
    assert kd_loss(s, t, y, alpha=0.25, regression=True).item() == pytest.approx(0.25 * 0.5 + 0.75 * 2.0)


def test_logit_table_follows_ids_through_shuffled_batches():
    tokenizer = tiny_tokenizer()
    examples = load_split(get_task("sst2"), "train", DATA / "sst2")
    table = LogitTable(examples.ids, torch.tensor([[float(i), -float(i)] for i in examples.ids]))
    loader = torch.utils.data.DataLoader(encode(examples, tokenizer), batch_size=5, shuffle=True,
                                         collate_fn=Collator(tokenizer, regression=False),
                                         generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        assert table.lookup(batch["idx"])[:, 0].tolist() == batch["idx"].float().tolist()
        seen += batch["idx"].tolist()
    assert sorted(seen) == examples.ids and seen != examples.ids  # really shuffled
    with pytest.raises(KeyError):
        table.lookup(torch.tensor([999]))


def test_training_pairs_each_example_with_its_own_teacher_logits(tmp_path, monkeypatch):
    """A teacher whose logit is the example id; labels are id / 4: every KD batch must see logit == 4 * label."""
    import kdlora.distill
    import kdlora.rundir
    import kdlora.train.run
    import kdlora.train.start

    rows = ["sentence1,sentence2,label"] + [f"good {i},film {i},{i / 4}" for i in range(20)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "validation.csv").write_text("\n".join(rows[:9]) + "\n")
    monkeypatch.setattr(kdlora.train.run, "teacher_source_for",
                        lambda *a, **k: LogitTable(list(range(20)), torch.arange(20.0).view(-1, 1)))
    for module in (kdlora.rundir, kdlora.train.start):  # the teacher above has no run folder
        monkeypatch.setattr(module, "check_run", lambda *a, **k: {})
    seen, real = [], kdlora.distill.kd_loss

    def spy(student, teacher, labels, **kwargs):
        assert teacher.view(-1).tolist() == (labels * 4).tolist()
        seen.extend(labels.tolist())
        return real(student, teacher, labels, **kwargs)

    monkeypatch.setattr(kdlora.distill, "kd_loss", spy)
    config = tiny_config("stsb", "bert", "kd-lora", data_dir=str(tmp_path), teacher="unused", epochs=2,
                         student_init="pretrained")
    result = kdlora.train.run_training(config, tmp_path / "run", progress=False)
    assert result["steps"] == 10 and len(seen) == 40


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    from kdlora.train import run_training

    out = tmp_path_factory.mktemp("teacher") / "fft"
    run_training(tiny_config("sst2", "minilm", "fft"), out, progress=False)
    return out


def test_cached_logits_equal_the_teachers_own_and_stale_cache_is_recomputed(teacher_run, tmp_path, monkeypatch,
                                                                            capsys):
    from kdlora.rundir import load_model, load_tokenizer

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path))
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(10, seed=3)
    table = cached_teacher_logits(teacher_run, examples, "sst2", "train", 32)
    model, tokenizer = load_model(teacher_run, merged=True), load_tokenizer(teacher_run)
    direct = predict_logits(model, encode(examples, tokenizer, 32), tokenizer)
    shuffled = torch.tensor(examples.ids[::-1])
    assert torch.allclose(table.lookup(shuffled), direct.flip(0), atol=1e-5)
    # the same fingerprint: read back from the cache (a second file read, no recompute message)
    assert torch.equal(cached_teacher_logits(teacher_run, examples, "sst2", "train", 32).logits, table.logits)
    assert "stale" not in capsys.readouterr().err
    cached_teacher_logits(teacher_run, examples, "sst2", "train", 16)  # another max length: other fingerprint
    assert "is stale" in capsys.readouterr().err
    online = OnlineTeacher(teacher_run, examples, 32)
    assert torch.allclose(online.lookup(shuffled), direct.flip(0), atol=1e-5)


def test_bf16_teacher_logits_are_cached_apart_from_fp32_ones(teacher_run, tmp_path, monkeypatch):
    """Teacher logits computed under bf16 autocast (issue 27) never stand in for fp32 ones, nor the other way."""
    from kdlora.rundir import load_model, load_tokenizer

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path))
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(10, seed=3)
    fp32 = cached_teacher_logits(teacher_run, examples, "sst2", "train", 32)
    bf16 = cached_teacher_logits(teacher_run, examples, "sst2", "train", 32, precision="bf16")
    assert (fp32.source, bf16.source) == ("computed", "computed")  # the fp32 cache was not read for bf16
    assert bf16.fingerprint != fp32.fingerprint
    assert sorted(p.name.count("-bf16") for p in (tmp_path / "teacher-logits").iterdir()) == [0, 1]  # two files
    model, tokenizer = load_model(teacher_run, merged=True), load_tokenizer(teacher_run)
    batch = Collator(tokenizer, regression=True)(encode(examples, tokenizer, 32))  # the 10 rows: one batch
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "idx")}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(**inputs).logits.float()
    ids = torch.tensor(examples.ids)
    assert bf16.logits.dtype == torch.float32 and torch.allclose(bf16.lookup(ids), expected, atol=1e-6)
    assert not torch.equal(bf16.lookup(ids), fp32.lookup(ids))  # bf16's 8-bit mantissa shows in the logits
    again = {p: cached_teacher_logits(teacher_run, examples, "sst2", "train", 32, precision=p)
             for p in ("fp32", "bf16")}
    assert {p: t.source for p, t in again.items()} == {"fp32": "cache", "bf16": "cache"}
    assert torch.equal(again["fp32"].logits, fp32.logits) and torch.equal(again["bf16"].logits, bf16.logits)


def _sst2_folder(folder, prefix: str = ""):
    """The sst2 fixture's files, every train sentence starting with `prefix` (same rows, same labels)."""
    folder.mkdir()
    lines = (DATA / "sst2" / "train.tsv").read_text().splitlines()
    (folder / "train.tsv").write_text("\n".join([lines[0]] + [prefix + line for line in lines[1:]]) + "\n")
    (folder / "dev.tsv").write_text((DATA / "sst2" / "dev.tsv").read_text())
    return folder


def test_another_data_folder_with_as_many_rows_gets_its_own_teacher_logits(teacher_run, tmp_path, monkeypatch):
    """Finding: the cache was looked up by row id only, so other texts at the same ids got the old logits."""
    from kdlora.rundir import load_model, load_tokenizer
    from kdlora.train import run_training

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    first, second = _sst2_folder(tmp_path / "a"), _sst2_folder(tmp_path / "b", prefix="so ")

    def kd(folder, name):
        config = tiny_config("sst2", "minilm", "kd-lora", teacher=str(teacher_run), data_dir=str(folder))
        return run_training(config, tmp_path / name, progress=False)

    run_a = kd(first, "kd-a")
    assert run_a.teacher_logits["source"] == "computed"
    assert kd(first, "kd-a2").teacher_logits == {"source": "cache", "fingerprint": run_a.teacher_logits["fingerprint"],
                                                 "precision": "fp32"}
    run_b = kd(second, "kd-b")
    assert run_b.teacher_logits["source"] == "computed"
    assert run_b.teacher_logits["fingerprint"] != run_a.teacher_logits["fingerprint"]
    examples = load_split(get_task("sst2"), "train", second)
    table = cached_teacher_logits(teacher_run, examples, "sst2", "train", tiny_config().max_length)
    assert table.source == "cache"  # what the KD run on the second folder computed and cached
    model, tokenizer = load_model(teacher_run, merged=True), load_tokenizer(teacher_run)
    direct = predict_logits(model, encode(examples, tokenizer, tiny_config().max_length), tokenizer)
    # one computation twice (the same rows in the same batches of 64, the same kernels): bit for bit on any CPU
    assert torch.equal(table.lookup(torch.tensor(examples.ids)), direct)
    original = predict_logits(model, encode(load_split(get_task("sst2"), "train", first), tokenizer,
                                            tiny_config().max_length), tokenizer)
    assert not torch.equal(direct, original)  # the stale rows would have been wrong


def test_a_teacher_of_another_task_is_refused_in_one_line(teacher_run, tmp_path, capsys):
    """Finding: a teacher trained on another task was accepted."""
    from kdlora.cli import main

    code = main(["train", "--task", "cola", "--family", "minilm", "--method", "kd-lora", "--tiny", "--device",
                 "cpu", "--data-dir", str(DATA / "cola"), "--teacher", str(teacher_run), "--out",
                 str(tmp_path / "kd"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert (f"--teacher {teacher_run}: teacher has task sst2 and labels negative, positive; this run is task cola "
            "with 2 labels (unacceptable, acceptable)") in err
    assert not (tmp_path / "kd").exists()


def test_check_teacher_names_the_number_of_labels():
    from kdlora.errors import UserError
    from kdlora.train.start import check_teacher

    check_teacher("t", "sst2", ("LABEL_0", "LABEL_1"), get_task("sst2"))  # unnamed classes: the count decides
    with pytest.raises(UserError, match=r"^--teacher t: teacher has 2 labels; this run is task mnli with 3 labels "
                                        r"\(entailment, neutral, contradiction\)$"):
        check_teacher("t", None, ("LABEL_0", "LABEL_1"), get_task("mnli"))
