"""Full fine-tuning: every weight of the teacher trains on the task loss; its runs teach the distilling methods."""

from kdlora.methods.base import Method

FFT = Method(name="fft", label="FFT", summary="full fine-tuning of the teacher: every weight trains",
             role="teacher", colour="#4c72b0", line={"linestyle": "--", "marker": "s"}, teaches=True,
             in_paper=True, learning_rates={"glue": 2e-5, "small": 1e-4})
