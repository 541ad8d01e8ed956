"""Knowledge distillation: the KD-LoRA loss, a pure function of student and teacher outputs."""

from __future__ import annotations


def kd_loss(student_logits, teacher_logits, labels, temperature: float = 2.0, alpha: float = 0.5,
            regression: bool = False):
    """`alpha * KD + (1 - alpha) * task loss`.

    Classification: KD = KL(softmax(t/T) || softmax(s/T)) * T**2 (batch mean), task = cross-entropy.
    Regression: KD = MSE(student, teacher), task = MSE(student, label).
    """
    import torch.nn.functional as F

    if regression:
        s = student_logits.view(-1)
        distil = F.mse_loss(s, teacher_logits.view(-1).to(s.dtype))
        task = F.mse_loss(s, labels.view(-1).to(s.dtype))
    else:
        t = temperature
        distil = F.kl_div(F.log_softmax(student_logits / t, dim=-1),
                          F.log_softmax(teacher_logits.to(student_logits.dtype) / t, dim=-1),
                          reduction="batchmean", log_target=True) * t * t
        task = F.cross_entropy(student_logits, labels.view(-1))
    return alpha * distil + (1 - alpha) * task
