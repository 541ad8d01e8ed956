"""Knowledge distillation: the KD-LoRA loss, a pure function of student and teacher outputs."""

from __future__ import annotations


def kd_loss(student_logits, teacher_logits, labels, temperature: float = 2.0, alpha: float = 0.5,
            regression: bool = False, label_smoothing: float = 0.0):
    """`alpha * KD + (1 - alpha) * task loss`.

    Classification: KD = KL(softmax(t/T) || softmax(s/T)) * T**2 (batch mean), task = cross-entropy (against labels
    smoothed by `label_smoothing`, as the HF Trainer's `label_smoothing_factor`).
    Regression: KD = MSE(student, teacher), task = MSE(student, label).
    Computed in float32 whatever the logits' dtype (bf16/fp16 autocast): softmax at T = 2 over bf16's 8-bit
    mantissa would round the soft targets the student learns from.
    """
    import torch
    import torch.nn.functional as F

    student, teacher = student_logits.to(torch.float32), teacher_logits.to(torch.float32)
    if regression:
        s = student.view(-1)
        distil = F.mse_loss(s, teacher.view(-1))
        task = F.mse_loss(s, labels.view(-1).to(torch.float32))
    else:
        t = temperature
        distil = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                          reduction="batchmean", log_target=True) * t * t
        task = F.cross_entropy(student, labels.view(-1), label_smoothing=label_smoothing)
    return alpha * distil + (1 - alpha) * task
