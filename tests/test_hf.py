"""kdlora.hf: the DistillationTrainer's loss is `kdlora train`'s, each example meets its own teacher logits."""

import copy

import pytest
import torch

from kdlora.data.encode import Collator, encode, tiny_tokenizer
from kdlora.data.loaders import load_split
from kdlora.data.tasks import get_task
from kdlora.train.teacher import LogitTable, predict_logits
from train_helpers import DATA, tiny_config


def _tiny_bert(num_labels: int = 2, seed: int = 0):
    """A 2-layer, 32-wide BERT without dropout: a training step is deterministic, so two loops can be compared."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config)


def _kd_lora_student(num_labels: int = 2):
    """What `kdlora train --method kd-lora` trains: PEFT LoRA on the tiny BERT, head trained in full."""
    from kdlora.methods import LoraSettings, get_method
    from kdlora.modeling import adaptation

    model = _tiny_bert(num_labels)
    return get_method("kd-lora").prepare(model, adaptation(model), LoraSettings(rank=4, lora_alpha=8, lora_dropout=0.0))


def _args(tmp_path, **overrides):
    from transformers import TrainingArguments

    values = dict(output_dir=str(tmp_path / "trainer"), report_to=[], use_cpu=True, learning_rate=1e-3,
                  per_device_train_batch_size=4, num_train_epochs=1, save_strategy="no", logging_steps=1,
                  disable_tqdm=True, seed=0)
    return TrainingArguments(**{**values, **overrides})


def test_one_trainer_step_has_kdlora_trains_loss_on_the_same_batch(tmp_path):
    from datasets import Dataset

    from kdlora.hf import DistillationTrainer
    from kdlora.methods import get_method
    from kdlora.train.loop import forward_loss

    tokenizer = tiny_tokenizer()
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(8, seed=1)
    features = encode(examples, tokenizer, 32)
    generator = torch.Generator().manual_seed(0)
    table = LogitTable(examples.ids, torch.randn(len(examples), 2, generator=generator))
    model = _kd_lora_student()
    reference = copy.deepcopy(model).train()
    config = tiny_config("sst2", "bert", "kd-lora", temperature=2.0, kd_alpha=0.5)
    expected = forward_loss(reference, get_method("kd-lora"), Collator(tokenizer, False)(features), table, config,
                            regression=False).item()
    # the whole split in one batch: the Trainer's shuffle changes the order, not the batch's mean loss
    trainer = DistillationTrainer(model=model, args=_args(tmp_path, per_device_train_batch_size=8, max_steps=1),
                                  train_dataset=Dataset.from_list(features), processing_class=tokenizer,
                                  teacher=table, temperature=2.0, alpha=0.5)
    output = trainer.train()
    assert output.global_step == 1
    assert output.training_loss == pytest.approx(expected, rel=1e-5)
    # the step trained the adapters and the head only (a PEFT model, as kdlora trains it)
    changed = {n for n, p in model.named_parameters()
               if not torch.equal(p, dict(reference.named_parameters())[n])}
    assert changed and all("lora_" in n or "modules_to_save" in n for n in changed)


def test_each_example_meets_its_own_teacher_logits_through_the_trainers_shuffle(tmp_path, monkeypatch):
    """A teacher whose logit is the example's id, labels id / 4: every KD batch must see logit == 4 * label."""
    from datasets import Dataset

    import kdlora.distill
    from kdlora.hf import DistillationTrainer

    tokenizer = tiny_tokenizer()
    ids = [5 + 3 * i for i in range(20)]  # not row numbers: the id column, not the position, finds the row
    encoded = tokenizer([f"good film {i}" for i in ids], truncation=True, max_length=16)
    rows = [{"sentence": f"good film {i}", "input_ids": encoded["input_ids"][n],
             "attention_mask": encoded["attention_mask"][n], "label": i / 4, "idx": i} for n, i in enumerate(ids)]
    table = LogitTable(ids, torch.tensor(ids, dtype=torch.float32).view(-1, 1))
    seen, real = [], kdlora.distill.kd_loss

    def spy(student, teacher, labels, **kwargs):
        assert teacher.view(-1).tolist() == (labels * 4).tolist()
        seen.extend(labels.tolist())
        return real(student, teacher, labels, **kwargs)

    monkeypatch.setattr(kdlora.distill, "kd_loss", spy)
    trainer = DistillationTrainer(model=_tiny_bert(num_labels=1), args=_args(tmp_path, num_train_epochs=2),
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer, teacher=table,
                                  regression=True)
    trainer.train()
    assert len(seen) == 2 * 20 and sorted(seen) == sorted([i / 4 for i in ids] * 2)
    assert seen[:20] != [i / 4 for i in ids]  # really shuffled


def test_a_teacher_model_run_online_gives_the_cached_tables_loss(tmp_path, monkeypatch):
    from datasets import Dataset

    from kdlora.hf import DistillationCollator, DistillationTrainer, teacher_logits

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    tokenizer = tiny_tokenizer()
    teacher = _tiny_bert(seed=1).eval()
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(10, seed=2)
    raw = Dataset.from_dict({"sentence": [t[0] for t in examples.texts], "label": [int(v) for v in examples.labels],
                             "idx": examples.ids})
    cached = teacher_logits(str(tmp_path / "teacher"), raw, "sentence", max_length=32)
    features = encode(examples, tokenizer, 32)
    direct = predict_logits(teacher, features, tokenizer)
    assert cached.source == "computed" and torch.allclose(cached.lookup(torch.tensor(examples.ids)), direct,
                                                          atol=1e-5)
    assert teacher_logits(str(tmp_path / "teacher"), raw, "sentence", max_length=32).source == "cache"
    batch = DistillationCollator(tokenizer)(list(Dataset.from_list(features)))
    student = _kd_lora_student().eval()
    losses = [DistillationTrainer(model=student, args=_args(tmp_path), processing_class=tokenizer,
                                  teacher=source).compute_loss(student, batch).item()
              for source in (cached, teacher)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_evaluation_batches_need_no_teacher_and_a_missing_id_column_is_named(tmp_path):
    from datasets import Dataset

    from kdlora.hf import DistillationCollator, DistillationTrainer

    tokenizer = tiny_tokenizer()
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(6, seed=0)
    features = encode(examples, tokenizer, 32)
    empty = LogitTable([], torch.zeros(0, 2))  # any lookup would fail
    trainer = DistillationTrainer(model=_tiny_bert(), args=_args(tmp_path), eval_dataset=Dataset.from_list(features),
                                  processing_class=tokenizer, teacher=empty)
    metrics = trainer.evaluate()
    logits = _tiny_bert()(**{k: v for k, v in Collator(tokenizer, False)(features).items() if k != "idx"}).logits
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([int(v) for v in examples.labels]))
    assert metrics["eval_loss"] == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(KeyError, match="no 'idx' column"):
        DistillationCollator(tokenizer)([{k: v for k, v in features[0].items() if k != "idx"}])


def test_the_trainer_example_distils_a_derived_student_from_a_csv(tmp_path, monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    tokenizer = tiny_tokenizer()
    for name, seed in (("base", 0), ("teacher", 1)):
        _tiny_bert(seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rows = ["review,verdict"] + [f"{'a good film' if i % 2 else 'a bad movie'} {i},{'pos' if i % 2 else 'neg'}"
                                 for i in range(12)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:7]) + "\n")
    script = Path(__file__).parents[1] / "examples" / "trainer_kd.py"
    spec = importlib.util.spec_from_file_location("trainer_kd", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(["--model", str(tmp_path / "base"), "--teacher", str(tmp_path / "teacher"),
                            "--student", "derive:1", "--train_file", str(tmp_path / "train.csv"),
                            "--validation_file", str(tmp_path / "dev.csv"), "--text_columns", "review",
                            "--label_column", "verdict", "--rank", "4", "--output_dir", str(tmp_path / "out"),
                            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
                            "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no"])
    assert metrics["epoch"] == 1.0 and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert "teacher logits: computed" in capsys.readouterr().out
    assert list((tmp_path / "cache" / "teacher-logits").glob("custom-train-*.safetensors"))
    assert (tmp_path / "out" / "adapter_config.json").is_file()  # the PEFT student's adapter
