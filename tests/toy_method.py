"""A toy method in one file, for the registry test: LoRA on the teacher with an L2 penalty on its adapters (its own
loss term). Registering it is the last line; `KDLORA_METHODS=toy_method` loads it in every process."""

from kdlora.methods import register
from kdlora.methods.lora import lora_method

PENALTY = 1e-3


def adapter_l2(model, settings):
    """PENALTY x the squared norm of the adapter weights."""
    return PENALTY * sum((p.float() ** 2).sum() for n, p in model.named_parameters()
                         if p.requires_grad and (".lora_A." in n or ".lora_B." in n))


TOY = lora_method("toy-lora", "Toy-LoRA", "teacher", "#17becf", {"linestyle": "-", "marker": "*"}, False,
                  adapter="toy", _extra_loss=adapter_l2)
register(TOY)
