"""Hidden-state and attention-map distillation (`kdlora.hidden`): the layer maps, the losses on hand-made states, the
projections that train and are never saved, a resident teacher in a run and in the DistillationTrainer."""

import contextlib
import copy
import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kdlora.cli import main
from kdlora.data.encode import Collator, encode, tiny_tokenizer
from kdlora.data.loaders import load_split
from kdlora.data.tasks import get_task
from kdlora.errors import UserError
from kdlora.families import FAMILIES
from kdlora.hidden import HiddenDistillSettings, HiddenMatch, attention_loss, hidden_loss, layer_map
from kdlora.methods import METHODS, get_method
from kdlora.modeling import layers_to_keep
from train_helpers import DATA, tiny_config

torch.set_num_threads(1)


def _bert(width: int = 32, layers: int = 2, heads: int = 2, seed: int = 0):
    """A tiny BERT without dropout (the same input gives the same states), on the tiny tokenizer's 1,000 ids."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=1000, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * width, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)).eval()


def _batch(size: int = 4):
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(size, seed=0)
    tokenizer = tiny_tokenizer()
    return Collator(tokenizer, False)(encode(examples, tokenizer, 32))


def _terms(match, student, teacher, batch):
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        return match.loss(student(**inputs, **match.model_options), teacher(**inputs, **match.model_options),
                          batch["attention_mask"]).item()


# --- layer maps -------------------------------------------------------------------------------------------------


def test_a_student_cut_by_derive_3_learns_from_the_teacher_layers_it_was_cut_from():
    kept = layers_to_keep(6, 3)  # what `--student derive:3` keeps of a 6-layer teacher
    assert kept == [0, 2, 4]
    assert layer_map(6, 3, kept) == [(1, 1), (2, 3), (3, 5)]


def test_a_named_12_to_6_pair_maps_every_second_teacher_layer():
    assert layer_map(12, 6) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]
    with torch.device("meta"):  # BERT-base and DistilBERT from the bundled configs, no weights
        teacher, student = (FAMILIES["bert"].architecture(role).build() for role in ("teacher", "student"))
    match = HiddenMatch.between(HiddenDistillSettings(kd_hidden_weight=1.0), teacher, student)
    assert match.pairs == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12)]
    assert match.projections is None  # both 768 wide


def test_kd_layers_overrides_the_map_and_bad_maps_name_both_layer_counts():
    assert layer_map(6, 3, [0, 2, 4], override="0:0,1:2,3:6") == [(0, 0), (1, 2), (3, 6)]
    with pytest.raises(UserError, match=r"4:1 names a layer outside the models: the student's layers are 0\.\.3, "
                                        r"the teacher's 0\.\.6 \(0 = embeddings"):
        layer_map(6, 3, override="1:1,4:1")
    with pytest.raises(UserError, match="student layer 1 is mapped twice"):
        layer_map(6, 3, override="1:1,1:3")
    with pytest.raises(UserError, match="expected student:teacher pairs"):
        layer_map(6, 3, override="1-2")


def test_a_malformed_kd_layers_is_one_line_and_exit_2(capsys):
    code = main(["train", "--task", "sst2", "--family", "minilm", "--method", "kd-lora", "--tiny",
                 "--data-dir", str(DATA / "sst2"), "--teacher", "unused", "--kd-layers", "1-2", "--out", "unused"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--kd-layers '1-2': expected student:teacher pairs" in err


def test_the_settings_key_a_run_only_when_set_away_from_their_defaults():
    plain = tiny_config("sst2", "minilm", "kd-lora", teacher="t")
    assert tiny_config("sst2", "minilm", "kd-lora", teacher="t", kd_hidden_weight=0.0, kd_hidden_loss="mse",
                       kd_layers=None, kd_attention_weight=0.0).key() == plain.key()
    hidden = tiny_config("sst2", "minilm", "kd-lora", teacher="t", kd_hidden_weight=1.0)
    assert hidden.key() != plain.key() and hidden.identity()["kd_hidden_weight"] == 1.0
    assert "kd_hidden_weight" not in plain.identity()
    with pytest.raises(UserError, match="bad value for kd_hidden_loss: 'l1'"):
        tiny_config("sst2", "minilm", "kd-lora", teacher="t", kd_hidden_loss="l1")


# --- the losses -------------------------------------------------------------------------------------------------


def test_mse_and_cosine_on_hand_made_states():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one example, two tokens, width 2
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])
    both = torch.tensor([[1, 1]])
    # token 1: ((1-2)^2 + 0^2) / 2 = 0.5; token 2: ((0-1)^2 + (1-0)^2) / 2 = 1; mean (0.5 + 1) / 2 = 0.75
    assert hidden_loss([student], [teacher], both, "mse").item() == pytest.approx(0.75)
    # token 1 points the same way as the teacher's (cos 1, distance 0), token 2 at right angles (cos 0): (0 + 1) / 2
    assert hidden_loss([student], [teacher], both, "cosine").item() == pytest.approx(0.5)
    # two layer pairs: the mean of the two (0.75 and 0 for a pair that agrees)
    assert hidden_loss([student, teacher], [teacher, teacher], both, "mse").item() == pytest.approx(0.75 / 2)


def test_padded_positions_do_not_count():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 0.0]]])
    first_only = torch.tensor([[1, 0]])
    moved = student.clone()
    moved[0, 1] = torch.tensor([5.0, -7.0])  # the padded token's state
    for kind, expected in (("mse", 0.5), ("cosine", 0.0)):  # token 1 alone: (1-2)^2 / 2 = 0.5; cos 1
        assert hidden_loss([student], [teacher], first_only, kind).item() == pytest.approx(expected)
        assert hidden_loss([moved], [teacher], first_only, kind).item() == pytest.approx(expected)


def test_attention_kl_on_hand_made_maps():
    # one example, one head, two tokens (the second padded: its query row is left out)
    teacher = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.1, 0.9]]]])
    mask = torch.tensor([[1, 0]])
    # KL = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4 / 3)
    assert attention_loss([student], [teacher], mask).item() == pytest.approx(0.5 * math.log(4 / 3))
    # two student heads against one teacher head: the student's maps are averaged over its heads first
    two_heads = torch.cat([student, teacher], dim=1)  # mean row 1: (0.375, 0.625)
    expected = 0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625)
    assert attention_loss([two_heads], [teacher], mask).item() == pytest.approx(expected)


def test_the_same_model_with_the_identity_map_gives_zero_and_a_perturbed_one_more():
    teacher, batch = _bert(), _batch()
    settings = HiddenDistillSettings(kd_hidden_weight=1.0, kd_attention_weight=1.0)
    match = HiddenMatch.between(settings, teacher, teacher)
    assert match.pairs == [(1, 1), (2, 2)] and match.projections is None
    assert _terms(match, teacher, teacher, batch) == 0.0
    for name in ("bert.encoder.layer.0.output.dense.weight", "bert.encoder.layer.1.attention.self.query.weight"):
        student = copy.deepcopy(teacher)
        with torch.no_grad():
            student.get_parameter(name)[0, 0] += 0.5
        assert _terms(match, student, teacher, batch) > 0


def test_a_projection_maps_a_narrower_student_and_trains():
    teacher, student, batch = _bert(width=32), _bert(width=16, layers=1, seed=1), _batch()
    match = HiddenMatch.between(HiddenDistillSettings(kd_hidden_weight=1.0), teacher, student)
    assert match.pairs == [(1, 2)]  # uniform: student 1 <- teacher 1 * 2 // 1
    (projection,) = match.projections
    assert (projection.in_features, projection.out_features) == (16, 32)
    before = projection.weight.detach().clone()
    optimiser = torch.optim.SGD(match.projections.parameters(), lr=0.1)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    loss = match.loss(student(**inputs, output_hidden_states=True), teacher(**inputs, output_hidden_states=True),
                      batch["attention_mask"])
    loss.backward()
    optimiser.step()
    assert not torch.equal(projection.weight, before)


# --- runs ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_teacher(tmp_path_factory):
    from kdlora.train import run_training

    out = tmp_path_factory.mktemp("hidden") / "fft"
    run_training(tiny_config("sst2", "minilm", "fft"), out, progress=False)
    return out


def test_a_kd_lora_run_with_hidden_states_trains_with_its_teacher_resident_and_measured(minilm_teacher, tmp_path,
                                                                                      monkeypatch):
    import kdlora.hidden
    import kdlora.meters
    import kdlora.train.loop
    import kdlora.train.run
    from kdlora.train import run_training

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    measuring, made_while, losses, terms = [False], [], [], []
    real_track, real_make, real_loss, real_term = (kdlora.meters.track_memory, kdlora.train.run.teacher_source_for,
                                                   kdlora.train.loop.forward_loss, kdlora.hidden.HiddenMatch.loss)

    @contextlib.contextmanager
    def track(*args, **kwargs):
        with real_track(*args, **kwargs) as memory:
            measuring[0] = True
            yield memory
        measuring[0] = False

    def make(*args, **kwargs):
        made_while.append(measuring[0])
        return real_make(*args, **kwargs)

    def forward(*args, **kwargs):
        losses.append(real_loss(*args, **kwargs))
        return losses[-1]

    def term(self, *args):
        terms.append(real_term(self, *args))
        return terms[-1]

    monkeypatch.setattr(kdlora.meters, "track_memory", track)
    monkeypatch.setattr(kdlora.train.run, "teacher_source_for", make)
    monkeypatch.setattr(kdlora.train.loop, "forward_loss", forward)
    monkeypatch.setattr(kdlora.hidden.HiddenMatch, "loss", term)
    config = tiny_config("sst2", "minilm", "kd-lora", teacher=str(minilm_teacher), kd_hidden_weight=1.0,
                         kd_hidden_loss="cosine", epochs=6, learning_rate=1e-2)
    result = run_training(config, tmp_path / "kd", progress=False)
    assert result["status"] == "done" and made_while == [True]  # the teacher loaded inside the measured block
    steps = result["steps"] // 6
    assert len(terms) == len(losses) == 6 * steps
    first, last = (sum(x.item() for x in part) / steps for part in (losses[:steps], losses[-steps:]))
    assert last < first
    metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert metrics["teacher_resident"] is True and metrics["teacher_logits"]["source"] == "online"
    # the tiny MiniLM teacher has 2 layers; its derived student keeps layer 0: student 1 <- teacher output 1
    assert metrics["hidden_distillation"] == {"terms": "hidden states x 1 (cosine), student:teacher layers 1:1",
                                              "layer_map": "1:1", "projection_params": 0}
    assert (metrics["config"]["kd_hidden_weight"], metrics["config"]["kd_hidden_loss"]) == (1.0, "cosine")
    card = (tmp_path / "kd" / "README.md").read_text()
    assert "- **hidden-state distillation**: hidden states x 1 (cosine), student:teacher layers 1:1; the teacher ran " \
           "beside the student" in card and "the resident teacher included" in card


@pytest.mark.parametrize("name", [m.name for m in METHODS.values() if m.distills])
def test_every_distilling_method_takes_the_hidden_terms_on_one_batch(minilm_teacher, name):
    """The loop's loss on one batch: each method's own loss plus the hidden and attention terms, whose gradients
    reach the method's trained parameters and the projection."""
    from kdlora.hidden import attach
    from kdlora.modeling import adaptation
    from kdlora.train.loop import forward_loss
    from kdlora.train.teacher import OnlineTeacher

    method = get_method(name)
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(4, seed=0)
    config = tiny_config("sst2", "minilm", name, teacher=str(minilm_teacher), kd_hidden_weight=1.0,
                         kd_attention_weight=1.0, rank=4)
    student = _bert(width=16, layers=1, seed=1)
    student = method.prepare(student, adaptation(student), config, total_steps=10)
    teacher = OnlineTeacher(minilm_teacher, examples, 32)
    teacher.match = HiddenMatch.between(config, teacher.model, student)
    attach(student, teacher.match)
    batch = Collator(tiny_tokenizer(), False)(encode(examples, tiny_tokenizer(), 32))
    loss = forward_loss(student.train(), method, batch, teacher, config, regression=False)
    loss.backward()
    grads = {n: p.grad for n, p in student.named_parameters() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if method.is_adapter_parameter(n))
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "kd_hidden_projections" in n)


ROWS = [("a good film", "up"), ("very good", "up"), ("great great", "up"), ("a bad film", "down"),
        ("very bad", "down"), ("bad bad", "down")] * 2


def test_a_narrower_students_projection_trains_and_stays_out_of_the_saved_adapter(tmp_path, monkeypatch, capsys):
    import kdlora.hidden

    monkeypatch.setenv("KDLORA_CACHE", str(tmp_path / "cache"))
    for name, model in (("teacher", _bert(width=32, layers=2)), ("student", _bert(width=16, layers=1, heads=4))):
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer().save_pretrained(tmp_path / name)
    pd.DataFrame(ROWS, columns=["review", "verdict"]).to_csv(tmp_path / "train.csv", index=False)
    common = ["--train-file", str(tmp_path / "train.csv"), "--validation-file", str(tmp_path / "train.csv"),
              "--text-columns", "review", "--label-column", "verdict", "--model", str(tmp_path / "teacher"),
              "--epochs", "2", "--batch-size", "4", "--learning-rate", "1e-2", "--device", "cpu", "--quiet"]
    assert main(["train", *common, "--method", "fft", "--out", str(tmp_path / "fft")]) in (0, 1)
    kept = {}
    real_attach, real_detach = kdlora.hidden.attach, kdlora.hidden.detach

    def attach(model, match):
        kept["before"] = [p.detach().clone() for p in match.projections.parameters()]
        return real_attach(model, match)

    def detach(model):
        kept["after"] = [p.detach().clone() for p in getattr(model, kdlora.hidden.PROJECTIONS).parameters()]
        return real_detach(model)

    monkeypatch.setattr(kdlora.hidden, "attach", attach)
    monkeypatch.setattr(kdlora.hidden, "detach", detach)
    capsys.readouterr()
    code = main(["train", *common, "--method", "kd-lora", "--student", str(tmp_path / "student"), "--teacher",
                 str(tmp_path / "fft"), "--kd-hidden-weight", "1", "--kd-attention-weight", "0.5", "--out",
                 str(tmp_path / "kd")])
    assert code in (0, 1)
    assert ("teacher: ran beside the student on every batch for hidden states x 1 (mse, projected to the teacher's "
            "width) + attention maps x 0.5 (KL), student:teacher layers 1:2; its memory is in the peak figure"
            in capsys.readouterr().out)
    assert all(not torch.equal(a, b) for a, b in zip(kept["before"], kept["after"], strict=True))
    metrics = json.loads((tmp_path / "kd" / "metrics.json").read_text())
    assert metrics["hidden_distillation"]["projection_params"] == 16 * 32 + 32  # weight and bias of one Linear
    saved = load_file(tmp_path / "kd" / "adapter" / "adapter_model.safetensors")
    assert saved and not any("kd_hidden" in name for name in saved)
    assert main(["train", *common, "--method", "kd-lora", "--student", str(tmp_path / "student"), "--teacher",
                 str(tmp_path / "fft"), "--kd-hidden-weight", "1", "--kd-layers", "1:3", "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1:3 names a layer outside the models: the student's layers are 0..1, the " \
        "teacher's 0..2 (0 = embeddings" in err


def test_the_distillation_trainer_adds_the_hidden_term_and_trains_the_projection(tmp_path):
    from datasets import Dataset
    from transformers import TrainingArguments

    from kdlora.hf import DistillationTrainer
    from kdlora.methods import LoraSettings, get_method
    from kdlora.modeling import adaptation

    tokenizer = tiny_tokenizer()
    examples = load_split(get_task("sst2"), "train", DATA / "sst2").subset(8, seed=1)
    student = _bert(width=16, layers=1, seed=1)
    student = get_method("kd-lora").prepare(student, adaptation(student), LoraSettings(rank=4, lora_dropout=0.0))
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), report_to=[], use_cpu=True, learning_rate=1e-2,
                             per_device_train_batch_size=4, max_steps=3, save_strategy="no", disable_tqdm=True,
                             seed=0)
    trainer = DistillationTrainer(model=student, args=args, train_dataset=Dataset.from_list(encode(examples, tokenizer,
                                                                                                   32)),
                                  processing_class=tokenizer, teacher=_bert(width=32), hidden_weight=2.0,
                                  hidden_loss="cosine")
    assert trainer.hidden.pairs == [(1, 2)]
    before = trainer.hidden.projections[0].weight.detach().clone()
    assert trainer.train().global_step == 3
    assert not torch.equal(trainer.hidden.projections[0].weight, before)
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(tmp_path / "saved" / "adapter_model.safetensors")
    assert saved and not any("kd_hidden" in name or "projection" in name for name in saved)
    with pytest.raises(ValueError, match="needs the teacher model itself"):
        DistillationTrainer(model=student, args=args, processing_class=tokenizer,
                            teacher=_LookupOnly(), hidden_weight=1.0)


class _LookupOnly:
    """A teacher that is only a table of logits by id."""

    def lookup(self, ids):
        return torch.zeros(len(ids), 2)
