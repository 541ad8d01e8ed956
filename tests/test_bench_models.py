"""Merging LoRA adapters changes the speed of inference, never its outputs."""

import pytest
import torch

from kdlora import modeling as models
from kdlora.families import FAMILIES
from kdlora.methods import METHODS

torch.set_num_threads(1)


def _with_nonzero_adapters(model):
    # PEFT starts B at zero, which would make merged == unmerged trivially true
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", ["lora", "kd-lora"])
def test_merged_and_unmerged_outputs_match(family, method):
    torch.manual_seed(0)
    fam, meth = FAMILIES[family], METHODS[method]
    _, base = models.build_base(fam, meth, tiny=True)
    model = _with_nonzero_adapters(models.prepare(base, meth, rank=4)).eval()
    ids = torch.randint(500, 1000, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        unmerged = model(input_ids=ids, attention_mask=mask).logits
        merged_model = models.merged(model)
        merged = merged_model(input_ids=ids, attention_mask=mask).logits
    assert not any("lora" in name for name, _ in merged_model.named_parameters())
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_merged_weight_is_base_plus_scaled_b_times_a():
    torch.manual_seed(0)
    fam, meth = FAMILIES["bert"], METHODS["lora"]
    _, base = models.build_base(fam, meth, tiny=True)
    model = _with_nonzero_adapters(models.prepare(base, meth, rank=4))
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    expected = query.base_layer.weight + query.scaling["default"] * query.lora_B["default"].weight \
        @ query.lora_A["default"].weight
    merged = models.merged(model)
    torch.testing.assert_close(merged.bert.encoder.layer[0].attention.self.query.weight, expected.detach())


def test_fft_model_is_its_own_inference_model():
    _, base = models.build_base(FAMILIES["bert"], METHODS["fft"], tiny=True)
    model = models.prepare(base, METHODS["fft"], rank=None)
    assert models.merged(model) is model
    assert all(p.requires_grad for p in model.parameters())
