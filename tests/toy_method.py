"""A toy method in one file, for the registry test: LoRA on the teacher with an L2 penalty on its adapters (its own
loss term) whose weight is its own setting. Registering it is the last line; `KDLORA_METHODS=toy_method` loads it in
every process."""

from dataclasses import dataclass

from kdlora.methods import register
from kdlora.methods.lora import LoraSettings, lora_method


@dataclass
class ToySettings:
    """The toy method's own setting."""

    toy_penalty: float = 1e-3
    """Toy-LoRA: weight of the L2 penalty on the adapter weights."""

    def checks(self) -> dict[str, bool]:
        return {"toy_penalty": self.toy_penalty >= 0}


def adapter_l2(model, settings):
    """toy_penalty x the squared norm of the adapter weights."""
    return settings.toy_penalty * sum((p.float() ** 2).sum() for n, p in model.named_parameters()
                         if p.requires_grad and (".lora_A." in n or ".lora_B." in n))


TOY = lora_method("toy-lora", "Toy-LoRA", "teacher", "#17becf", {"linestyle": "-", "marker": "*"}, False,
                  adapter="toy", _extra_loss=adapter_l2, settings=(LoraSettings, ToySettings))
register(TOY)
