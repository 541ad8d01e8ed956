"""The fine-tuning methods, registered by name; the CLI's choices come from here."""

from kdlora.errors import UserError
from kdlora.methods.base import LoraSettings, Method
from kdlora.methods.fft import FFT
from kdlora.methods.kd_lora import KD_LORA
from kdlora.methods.lora import LORA

METHODS: dict[str, Method] = {m.name: m for m in (FFT, LORA, KD_LORA)}


def get_method(name: str) -> Method:
    """The method called `name` (`kd_lora` and `KD-LoRA` are accepted too), or a UserError."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    try:
        return METHODS[key]
    except KeyError:
        raise UserError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None


__all__ = ["METHODS", "LoraSettings", "Method", "get_method"]
