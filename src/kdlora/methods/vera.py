"""VeRA (Kopiczko et al. 2024; PEFT's VeraConfig): one pair of frozen random matrices A (r x in) and B (out x r)
shared by every adapted layer, and per layer two trained scaling vectors, b (out) and d (r): ΔW = Λ_b·B·Λ_d·A. On
the teacher (`vera`) and on the student with KD (`kd-vera`).

Its adapter parameters are the vectors only, out + r per adapted matrix: at BERT-base's query and value, rank 256,
12 x 2 x (768 + 256) = 24,576 (LoRA's rank 8: 294,912). So VeRA runs at a far higher rank than LoRA (the paper
uses 256-1024), and its vectors at a higher learning rate (the paper's 4e-3 to 1e-2). --rank is r, --lora-dropout
its dropout; the shared matrices come from --vera-projection-seed and are saved with the adapter, so it loads
anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.methods.lora import lora_method

VERA_MARKERS = (".vera_lambda_b.", ".vera_lambda_d.")
"""PEFT's names of VeRA's trained vectors (the shared A and B are frozen buffers, not parameters)."""
RATES = {"glue": 4e-3, "small": 1e-2}
"""The paper's RoBERTa-base range for GLUE (4e-3 to 1e-2); its high end for the small snippet data (~150 steps)."""


@dataclass
class VeraSettings:
    """VeRA's vector initialisation and shared projections."""

    vera_d_initial: float = 0.1
    """VeRA: the initial value of the scaling vector d (PEFT's d_initial; b starts at 0, so ΔW does)."""
    vera_projection_seed: int = 0
    """VeRA: the seed of the shared frozen random matrices A and B (PEFT's projection_prng_key)."""

    def checks(self) -> dict[str, bool]:
        return {"vera_d_initial": self.vera_d_initial > 0}


def add_vera(model, adaptation, settings, total_steps=None):
    """Wrap `model` in PEFT VeRA on `adaptation.lora_targets` (rank `settings.rank`); only the scaling vectors and
    `adaptation.head_modules` train. Calling it twice adds VeRA twice."""
    from peft import TaskType, VeraConfig, get_peft_model

    config = VeraConfig(task_type=TaskType.SEQ_CLS, r=settings.rank, target_modules=list(adaptation.lora_targets),
                        modules_to_save=list(adaptation.head_modules), vera_dropout=settings.lora_dropout,
                        d_initial=settings.vera_d_initial, projection_prng_key=settings.vera_projection_seed,
                        save_projection=True)
    return get_peft_model(model, config)


_options = dict(adapter="vera", own_settings=(VeraSettings,), adapter_markers=VERA_MARKERS, _prepare=add_vera,
                learning_rates=RATES)
VERA = lora_method("vera", "VeRA", "teacher", "#ff9da7", {"linestyle": "-", "marker": "<"}, False, **_options)
KD_VERA = lora_method("kd-vera", "KD-VeRA", "student", "#59a14f", {"linestyle": ":", "marker": ">"}, True,
                      **_options)
