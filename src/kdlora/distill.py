"""Knowledge distillation: the KD-LoRA loss, a pure function of student and teacher outputs."""

from __future__ import annotations


def kd_loss(student_logits, teacher_logits, labels, temperature: float = 2.0, alpha: float = 0.5,
            regression: bool = False, label_smoothing: float = 0.0, labelled=None):
    """The mean over the batch's examples of each example's loss: `alpha * KD + (1 - alpha) * task loss` on a
    labelled example, the KD term alone on a transfer example (`labelled` False: text the teacher labelled, whose
    label is never read). `labelled`: a bool per example, or None when every one is labelled.

    Classification: KD = KL(softmax(t/T) || softmax(s/T)) * T**2, task = cross-entropy (against labels smoothed by
    `label_smoothing`, as the HF Trainer's `label_smoothing_factor`). Regression: KD = (s - t)**2, task =
    (s - label)**2. Over a batch of labelled examples that is the usual `alpha * KD + (1 - alpha) * task`, each term
    its batch mean.
    Computed in float32 whatever the logits' dtype (bf16/fp16 autocast): softmax at T = 2 over bf16's 8-bit
    mantissa would round the soft targets the student learns from.
    """
    import torch
    import torch.nn.functional as F

    student, teacher = student_logits.to(torch.float32), teacher_logits.to(torch.float32)
    labels = labels.view(-1)
    if labelled is not None:  # a placeholder where there is no label: a NaN there would poison the gradient
        labelled = labelled.view(-1).to(torch.bool)
        labels = torch.where(labelled, labels, torch.zeros_like(labels))
    if regression:
        s = student.view(-1)
        distil = (s - teacher.view(-1)) ** 2
        task = (s - labels.to(torch.float32)) ** 2
    else:
        t = temperature
        distil = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                          reduction="none", log_target=True).sum(-1) * t * t
        task = F.cross_entropy(student, labels, label_smoothing=label_smoothing, reduction="none")
    each = alpha * distil + (1 - alpha) * task
    if labelled is not None:
        each = torch.where(labelled, each, distil)
    return each.mean()


def teacher_labelled(labels, labelled, teacher_logits, regression: bool):
    """`labels` with the teacher's label where an example has none (`labelled` False): its predicted class (the
    argmax of its logits), or for regression its value."""
    import torch

    guess = teacher_logits.view(-1) if regression else teacher_logits.argmax(-1)
    return torch.where(labelled.view(-1).to(torch.bool), labels.view(-1), guess.to(labels.dtype))
