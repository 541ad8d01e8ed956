"""LoRA: adapters on the teacher's attention query and value, plus the task head, on the task loss."""

from kdlora.methods.base import Method, add_lora

LORA = Method(name="lora", label="LoRA", role="teacher", distills=False, uses_lora=True, _prepare=add_lora)
