"""kdlora: FFT, LoRA and KD-LoRA on BERT-family encoders, and an honest account of what each costs."""

__version__ = "0.1.0"
