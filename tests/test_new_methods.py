"""The methods from PEFT's newer LoRA variants, each a plug-in with a KD twin (PiSSA, LoRA+, VeRA): exact adapter
counts (the arithmetic and PEFT's own count), a tiny model whose loss falls under each one's loss and optimiser
groups, LoRA+'s groups, and PiSSA saved as plain LoRA on the original weights."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel

from kdlora.families import FAMILIES
from kdlora.methods import METHODS
from kdlora.methods.pissa import add_pissa, as_lora
from kdlora.modeling import adaptation, build_base, count, prepare
from kdlora.rundir import load_model, load_tokenizer
from kdlora.train import run_training
from kdlora.train.loop import optimizer_of
from train_helpers import tiny_config

torch.set_num_threads(1)

# BERT-base: 12 layers, width 768, head 768 x 2 + 2; DistilBERT: 6 layers, pre_classifier 768 x 768 + 768 and
# classifier 768 x 2 + 2. Query and value adapted at rank 8.
BERT_HEAD, DISTIL_HEAD = 768 * 2 + 2, 768 * 768 + 768 + 768 * 2 + 2
LORA_PAIR = 768 * 8 + 8 * 768
EXACT = {  # method -> adapter parameters at rank 8
    "pissa": 12 * 2 * LORA_PAIR,          # LoRA's A and B, only initialised otherwise: 294,912
    "kd-pissa": 6 * 2 * LORA_PAIR,        # 147,456
    "lora-plus": 12 * 2 * LORA_PAIR,      # LoRA's adapters; only the optimiser differs
    "kd-lora-plus": 6 * 2 * LORA_PAIR,
    "vera": 12 * 2 * (768 + 8),           # per adapted matrix b (out) + d (r); A and B are shared and frozen: 18,624
    "kd-vera": 6 * 2 * (768 + 8),         # 9,312
}
NEW = list(EXACT)


@pytest.mark.parametrize("name", NEW)
def test_exact_counts_agree_with_the_arithmetic_and_with_peft(name):
    method = METHODS[name]
    head = DISTIL_HEAD if method.role == "student" else BERT_HEAD
    counts = count(FAMILIES["bert"], method, 8)
    assert (counts.adapter, counts.trainable) == (EXACT[name], EXACT[name] + head)
    _, base = build_base(FAMILIES["bert"], method, on_meta=True)
    with torch.device("meta"):
        trainable, _ = prepare(base, method, 8).get_nb_trainable_parameters()
    assert trainable == counts.trainable
    assert EXACT["pissa"] == 294_912 and EXACT["kd-pissa"] == 147_456 and EXACT["vera"] == 18_624


def test_vera_at_the_rank_it_is_run_at():
    assert count(FAMILIES["bert"], METHODS["vera"], 256).adapter == 12 * 2 * (768 + 256) == 24_576


def test_lora_plus_gives_b_ratio_times_as_rate_through_the_loops_optimiser():
    method = METHODS["lora-plus"]
    _, base = build_base(FAMILIES["bert"], method, tiny=True)
    model = method.prepare(base, adaptation(base), settings_of(method, loraplus_lr_ratio=4.0))
    optimizer = optimizer_of(model, method, settings_of(method, loraplus_lr_ratio=4.0))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    a = [rate[id(p)] for n, p in named.items() if ".lora_A." in n]
    b = [rate[id(p)] for n, p in named.items() if ".lora_B." in n]
    assert set(a) == {1e-2} and set(b) == {4 * 1e-2} and len(a) == len(b) == 2 * 2  # 2 layers x query, value
    assert set(rate) == {id(p) for p in named.values() if p.requires_grad}  # every trained weight, once
    lora = METHODS["lora"]
    plain = optimizer_of(lora.prepare(base, adaptation(base), settings_of(lora)), lora, settings_of(lora))
    assert {group["lr"] for group in plain.param_groups} == {1e-2}


def settings_of(method, **values):
    """A run's settings as the loop reads them: the method's defaults, rank 8, AdamW's learning rate and decay."""
    return SimpleNamespace(**{**vars(method.default_settings(8)), "lr": 1e-2, "weight_decay": 0.01, **values})


@pytest.mark.parametrize("name", NEW)
def test_a_tiny_model_trains_and_its_loss_falls(name):
    method = METHODS[name]
    torch.manual_seed(0)
    _, base = build_base(FAMILIES["bert"], method, tiny=True)
    settings = settings_of(method)
    model = method.prepare(base, adaptation(base), settings, total_steps=30)
    optimizer = optimizer_of(model, method, settings)
    batch = {"input_ids": torch.randint(5, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1] * 4)}
    teacher = torch.tensor([[2.0, -2.0], [-2.0, 2.0]] * 4) if method.distills else None
    model.train()
    losses = []
    for step in range(1, 31):
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = method.loss(model, outputs, batch, teacher, settings)
        loss.backward()
        optimizer.step()
        method.after_step(model, step, settings)
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])  # at least a tenth off the start (ln 2 for the tasks)


def _tiny_bert():
    torch.manual_seed(0)
    return FAMILIES["bert"].teacher.build(num_labels=2, tiny=True).eval()


def _trained_pissa(original):
    method = METHODS["pissa"]
    model = add_pissa(copy.deepcopy(original), adaptation(original), method.default_settings(4))
    with torch.no_grad():  # training's effect: every trainable weight moved
        for param in model.parameters():
            if param.requires_grad:
                param += 0.05 * torch.randn_like(param)
    return model.eval()


def test_pissa_changes_the_base_and_saving_gives_plain_lora_on_the_original_weights(tmp_path):
    original = _tiny_bert()
    model = _trained_pissa(original)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(model.base_model.model.state_dict()[query.replace("weight", "base_layer.weight")],
                              original.state_dict()[query])  # the base holds W_res, not W
    inputs = {"input_ids": torch.randint(5, 100, (3, 9))}
    with torch.no_grad():
        expected = model(**inputs).logits
    as_lora(model).save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (2 * 4, 2 * 16, True)
    loaded = PeftModel.from_pretrained(copy.deepcopy(original), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, atol=1e-5, rtol=1e-4)
        # the task head (modules_to_save) is the trained one: peft's own conversion drops it
        torch.testing.assert_close(loaded.merge_and_unload()(**inputs).logits, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "fft"
    assert run_training(tiny_config(method="fft"), out, progress=False).status == "done"
    return out


@pytest.mark.parametrize("name", NEW)
def test_runs_train_save_and_load_merged_and_not(tmp_path, teacher, name):
    method = METHODS[name]
    config = tiny_config(method=name, teacher=str(teacher) if method.distills else None)
    result = run_training(config, tmp_path / "run", progress=False)
    # tiny BERT (width 32), query and value at rank 8: teacher 2 layers, student 1
    layers = 1 if method.role == "student" else 2
    per_matrix = 32 + 8 if method.adapter == "vera" else 32 * 8 + 8 * 32
    assert result.status == "done" and result.adapter_params == layers * 2 * per_matrix
    assert (result.teacher_logits is not None) == method.distills
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    if method.adapter == "pissa":  # kept as plain LoRA of twice the rank, on the original weights
        assert result.method_details == {"init": "pissa", "saved_as": "LoRA rank 16 on the original weights"}
        assert (adapter["r"], adapter["init_lora_weights"]) == (2 * 8, True)
    batch = load_tokenizer(tmp_path / "run")(["a great film", "not good"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "run")(**batch).logits,
                                   load_model(tmp_path / "run", merged=True)(**batch).logits, atol=1e-5, rtol=1e-4)


def test_a_methods_own_setting_keys_only_its_own_runs_away_from_its_default():
    from kdlora.config import TrainConfig

    def key(method, **values):
        return TrainConfig(task="sst2", family="bert", method=method, **values).key()

    assert key("lora-plus", loraplus_lr_ratio=8.0) != key("lora-plus") != key("lora")
    assert key("lora", loraplus_lr_ratio=8.0, vera_d_initial=0.5) == key("lora")  # LoRA reads neither
    assert key("vera", vera_projection_seed=1) != key("vera")
