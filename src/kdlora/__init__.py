"""kdlora: FFT, LoRA and KD-LoRA on BERT-family encoders, and an honest account of what each costs.

    import kdlora
    kdlora.train_run("runs/fft", method="fft", model="my-encoder", train_file="train.csv", ...)
    kdlora.load_run("runs/fft").predict(["a fine film"])

`train_run`, `bench_pair`, `analyze_table` and `load_run` are documented in `kdlora.api`; importing kdlora
loads no torch.
"""

from kdlora.api import analyze_table, bench_pair, load_run, train_run

__version__ = "0.1.0"

__all__ = ["__version__", "analyze_table", "bench_pair", "load_run", "train_run"]
