"""The methods from PEFT's newer LoRA variants, each a plug-in with a KD twin: exact adapter counts (the arithmetic
and PEFT's own count), a tiny model whose loss falls under each one's loss and optimiser groups, and PiSSA saved
as plain LoRA on the original weights."""

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
    "pissa": 12 * 2 * LORA_PAIR,     # LoRA's A and B, only initialised otherwise: 294,912
    "kd-pissa": 6 * 2 * LORA_PAIR,   # 147,456
}
NEW = list(EXACT)


@pytest.mark.parametrize("name", NEW)
def test_exact_counts_agree_with_the_arithmetic_and_with_peft(name):
    method = METHODS[name]
    head = DISTIL_HEAD if method.role == "student" else BERT_HEAD
    counts = count(FAMILIES["bert"], method, 8)
    assert (counts.adapter_params, counts.trainable_params) == (EXACT[name], EXACT[name] + head)
    _, base = build_base(FAMILIES["bert"], method, on_meta=True)
    with torch.device("meta"):
        trainable, _ = prepare(base, method, 8).get_nb_trainable_parameters()
    assert trainable == counts.trainable_params
    assert EXACT["pissa"] == 294_912 and EXACT["kd-pissa"] == 147_456


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
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


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


def test_pissa_runs_save_the_converted_adapter_and_kd_pissa_distils(tmp_path):
    teacher = run_training(tiny_config(method="fft"), tmp_path / "fft", progress=False)
    assert teacher.status == "done"
    for name in NEW:
        config = tiny_config(method=name, teacher=str(tmp_path / "fft") if METHODS[name].distills else None)
        result = run_training(config, tmp_path / name, progress=False)
        assert result.status == "done" and result.method_details == {"init": "pissa",
                                                                     "saved_as": "LoRA rank 16 on the original weights"}
        adapter = json.loads((tmp_path / name / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == 2 * 8
        batch = load_tokenizer(tmp_path / name)(["a great film", "not good"], padding=True, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(load_model(tmp_path / name)(**batch).logits,
                                       load_model(tmp_path / name, merged=True)(**batch).logits, atol=1e-5, rtol=1e-4)
