"""Full fine-tuning: every weight of the teacher trains on the task loss."""

from kdlora.methods.base import Method

FFT = Method(name="fft", label="FFT", role="teacher", distills=False, uses_lora=False)
