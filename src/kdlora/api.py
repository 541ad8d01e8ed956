"""The Python API a notebook needs: train one run, bench a model pair, analyse a Table II, load a run to predict.

(Named `train_run`, `bench_pair`, `analyze_table`: `kdlora.train` and `kdlora.bench` are the package's modules.)

Each function takes the same settings as its command (`kdlora train`, `bench`, `analyze`, `predict`) as keyword
arguments, validates them once and raises `kdlora.errors.UserError` with the command's one-line message on a
mistake. Heavy libraries load on the first call, not on `import kdlora`; so do the package's own modules, since
`kdlora/__init__` imports this one and every `import kdlora.<module>` runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdlora.methods import baseline


def train_run(out_dir: str | Path, method: str = baseline().name, *, task: str | None = None, family: str | None = None,
              model: str | Path | None = None, dataset: str | Path | None = None,
              train_file: str | Path | None = None, validation_file: str | Path | None = None,
              text_columns: str | Sequence[str] | None = None, label_column: str | None = None,
              progress: bool = False, overwrite: bool = False, **settings):
    """Train one run (FFT, LoRA or KD-LoRA) into `out_dir`; returns its `TrainResult` (the fields of
    `metrics.json`, readable as `result.score` or `result["score"]`).

    Name a built-in `task` and `family`, or bring your own: `model` (hub name or folder) and a task from a
    `dataset` (`"imdb"`, `"nyu-mll/glue:sst2"`, a local folder; with `text_columns`, `label_column`) or from files
    (`train_file`, `validation_file`, `text_columns`, `label_column`). Any other `kdlora train` setting goes in
    `settings`: `student="derive:3"`, `teacher="runs/fft"`, `epochs=2`, `test_file=...`,
    `validation_split="train[90%:]"`. Writes `out_dir`; a finished run there is a UserError unless `overwrite`.
    """
    from kdlora.config import TrainConfig
    from kdlora.rundir import fill_defaults
    from kdlora.train import run_training

    if text_columns is not None and not isinstance(text_columns, str):
        text_columns = ",".join(text_columns)
    given = dict(task=task, family=family, method=method, model=model, dataset=dataset, train_file=train_file,
                 validation_file=validation_file, text_columns=text_columns, label_column=label_column, **settings)
    values = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
    fill_defaults(values)
    return run_training(TrainConfig.from_dict(values), out_dir, progress=progress, overwrite=overwrite)


def bench_pair(model: str | Path | None = None, student: str | Path | None = None, *,
               families: Sequence[str] | None = None, params_only: bool = True, out_dir: str | Path | None = None,
               progress: bool = False, **settings) -> dict:
    """Count (and with `params_only=False` measure) Table II for a model pair: `model` (hub name, folder or
    config.json) and its `student` (the same kinds, or `derive:N`), or named `families`. Returns the bench.json
    dict; with `out_dir`, writes its files there. Other `kdlora bench` settings go in `settings` (`ranks=(8,)`)."""
    from kdlora.bench.runner import run_bench
    from kdlora.bench.settings import BenchSettings
    from kdlora.bench.table import write_bench_outputs

    if families is not None:
        settings["families"] = tuple([families] if isinstance(families, str) else families)
    if model is not None:
        settings["model"] = str(model)
    if student is not None:
        settings["student"] = str(student)
    result = run_bench(BenchSettings(params_only=params_only, **settings), progress=progress)
    if out_dir is not None:
        write_bench_outputs(result, out_dir)
    return result


def analyze_table(table_csv: str | Path, out_dir: str | Path, reference_csv: str | Path | None = None) -> dict:
    """Write the efficiency report of a Table II CSV (report.md, analysis.json, plots) into `out_dir`; returns
    the analysis (ratios, averages, findings)."""
    from kdlora.analysis.report import write_report

    return write_report(table_csv, out_dir, reference_csv)


class LoadedRun:
    """A trained run (or an exported model folder) loaded once for prediction."""

    def __init__(self, folder: str | Path, batch_size: int = 32):
        from kdlora.predict import load_predictor

        self.folder = Path(folder)
        self.predictor = load_predictor(folder, batch_size)
        self.task = self.predictor.task
        """The task it predicts for: its text fields and class names (a task from files keeps the user's)."""

    def predict(self, texts: str | Sequence[str]) -> list[dict]:
        """One `{"text", "label", "score"}` per text (`{"text", "value"}` for regression), in the task's own label
        names; a pair task takes its two texts separated by a tab. A single string is one text."""
        from kdlora.predict import label_texts

        return label_texts(self.predictor, [texts] if isinstance(texts, str) else list(texts))


def load_run(folder: str | Path, batch_size: int = 32) -> LoadedRun:
    """Load a run folder (`kdlora train`) or an exported model (`kdlora export`) for prediction."""
    return LoadedRun(folder, batch_size)
