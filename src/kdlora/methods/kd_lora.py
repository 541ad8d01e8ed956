"""KD-LoRA: LoRA adapters and head of the smaller student, on `alpha * KD + (1 - alpha) * task loss`."""

from kdlora.methods.base import Method, add_lora

KD_LORA = Method(name="kd-lora", label="KD-LoRA", role="student", distills=True, uses_lora=True,
                 _prepare=add_lora)
