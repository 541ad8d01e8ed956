"""DoRA (PEFT's `use_dora`): LoRA whose update is split into a direction and a learned per-output magnitude, on
the teacher (`dora`) and on the student with KD (`kd-dora`). The magnitude vectors are adapter parameters."""

from __future__ import annotations

from functools import partial

from kdlora.methods.lora import LORA_MARKERS, add_lora, lora_method

DORA_MARKERS = (*LORA_MARKERS, ".lora_magnitude_vector.")
"""LoRA's A and B plus one magnitude vector (one weight per output feature) per adapted layer."""

_options = dict(adapter="dora", adapter_markers=DORA_MARKERS, _prepare=partial(add_lora, use_dora=True))
DORA = lora_method("dora", "DoRA", "teacher", "#c44e52", {"linestyle": "-", "marker": "D"}, False, **_options)
KD_DORA = lora_method("kd-dora", "KD-DoRA", "student", "#937860", {"linestyle": ":", "marker": "d"}, True,
                      **_options)
