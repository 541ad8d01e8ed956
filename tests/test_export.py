import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import kdlora.precision
from kdlora.cli import main
from kdlora.data.loaders import load_split
from kdlora.data.tasks import get_task
from kdlora.errors import UserError
from kdlora.export import ExportSettings, export_run
from kdlora.predict import load_predictor, predict
from kdlora.rundir import load_model, load_tokenizer
from kdlora.train import run_training
from train_helpers import DATA, tiny_config

torch.set_num_threads(1)

# (format, precision, quantize) -> largest |exported logit - PyTorch fp32 logit| on the dev texts. bf16 keeps 8 bits
# of mantissa (relative error 2^-8 per weight); int8 weights are 1/127 of each channel's largest.
FORMS = {("safetensors", "fp32", "none"): 1e-5, ("safetensors", "bf16", "none"): 0.05,
         ("onnx", "fp32", "none"): 1e-4, ("onnx", "fp32", "int8"): 0.05}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    run_training(tiny_config(family="bert", method="lora"), out, progress=False)
    return out


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend this CPU has bf16 units (the form is written and scored the same; only speed differs)."""
    monkeypatch.setattr(kdlora.precision, "bf16_supported", lambda device=None: True)


def dev_texts():
    return load_split(get_task("sst2"), "validation", DATA / "sst2").texts


@pytest.mark.parametrize("form", list(FORMS), ids=["-".join(f) for f in FORMS])
def test_each_form_reloads_and_predicts_like_pytorch(run_dir, tmp_path, bf16_cpu, form):
    settings = ExportSettings(*form)
    info = export_run(run_dir, tmp_path / "out", settings)
    saved = json.loads((tmp_path / "out" / "export.json").read_text())
    assert saved == info
    assert (saved["format"], saved["precision"], saved["quantize"], saved["task"]) == (*form, "sst2")
    exported = load_predictor(tmp_path / "out").logits(dev_texts())
    reference = load_predictor(run_dir).logits(dev_texts())
    assert exported.shape == reference.shape == (10, 2)  # the fixture's dev split: 10 sentences
    assert np.abs(exported - reference).max() <= FORMS[form]
    # the reference is the run's own model on the run's dev split: the score training recorded
    assert saved["reference_accuracy"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["score"])
    assert saved["agreement"] == np.mean(exported.argmax(1) == reference.argmax(1))
    assert saved["dev_examples"] == 10
    assert (tmp_path / "out" / saved["model_file"]).stat().st_size == saved["size_bytes"]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no staging left


def test_bf16_halves_and_int8_shrinks_the_weights(run_dir, tmp_path, bf16_cpu):
    sizes = {form: export_run(run_dir, tmp_path / "-".join(form), ExportSettings(*form), score=False)["size_bytes"]
             for form in FORMS}
    assert sizes[("safetensors", "bf16", "none")] < 0.55 * sizes[("safetensors", "fp32", "none")]
    assert sizes[("onnx", "fp32", "int8")] < 0.7 * sizes[("onnx", "fp32", "none")]


def test_onnx_export_predicts_without_torch_or_transformers(run_dir, tmp_path):
    export_run(run_dir, tmp_path / "onnx", ExportSettings(format="onnx"), score=False)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n"
                                           "sys.modules['transformers'] = None\n")
    env = {**__import__("os").environ}
    env["PYTHONPATH"] = f"{shim}:{env['PYTHONPATH']}"
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "ModuleNotFoundError" in check.stderr  # the shim works
    proc = subprocess.run([sys.executable, "-m", "kdlora", "predict", str(tmp_path / "onnx"), "a great film", "bad"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    expected = [f"{r['label']}\t{r['score']:.4f}\t{r['text']}" for r in predict(run_dir, ["a great film", "bad"])]
    assert proc.stdout.splitlines() == expected


def test_cli_prints_the_form_and_the_scores(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out"), "--format", "onnx"]) == 0
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"onnx fp32 model written to {tmp_path / 'out'} ({info['size_bytes'] / 1e6:.1f} MB)"
    assert lines[1] == (f"dev accuracy on 10 validation examples: {info['accuracy']:.4f} exported, "
                        f"{info['reference_accuracy']:.4f} PyTorch fp32; predictions agree on 100.00%")


def _no_weights(run_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "adapter" / "adapter_model.safetensors").unlink()
    return broken


@pytest.mark.parametrize("case, flags, message", [
    ("not a run", [], "{run}: not a kdlora run folder (no run.json)"),
    ("weights missing", [], "{run}/adapter/adapter_model.safetensors: missing; the kdlora run folder is damaged: "
                            "re-run it, or pass --no-verify to load anyway"),
    ("weights missing", ["--no-verify"],
     "{run}: the run's weights are missing (no adapter/adapter_model.safetensors)"),
    ("int8 on safetensors", ["--quantize", "int8"],
     "--quantize int8 needs --format onnx (int8 is ONNX Runtime's dynamic quantisation; PyTorch int8 is not "
     "supported)"),
    ("bf16 on onnx", ["--format", "onnx", "--precision", "bf16"],
     "--precision bf16 with --format onnx: ONNX Runtime's CPU kernels have no fast bf16 path; use --quantize int8, "
     "or --format safetensors --precision bf16"),
    ("bf16 on a CPU without it", ["--precision", "bf16"],
     "--precision bf16: this CPU (no AVX512-BF16 or AMX) has no bf16 support; use fp32"),
])
def test_bad_exports_are_one_line_and_leave_the_output_folder_alone(run_dir, tmp_path, capsys, monkeypatch, case,
                                                                     flags, message):
    monkeypatch.setattr(kdlora.precision, "bf16_supported", lambda device=None: False)
    run = {"not a run": tmp_path / "empty", "weights missing": _no_weights(run_dir, tmp_path)}.get(case, run_dir)
    (tmp_path / "empty").mkdir(exist_ok=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    assert main(["export", str(run), "--out", str(out), *flags]) == 2
    assert capsys.readouterr().err == f"kdlora export: error: {message.format(run=run)}\n"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failure_while_scoring_leaves_nothing_half_written(run_dir, tmp_path, monkeypatch):
    def fail(*args):
        raise UserError("dev split unreadable")

    monkeypatch.setattr("kdlora.export.score_export", fail)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="dev split unreadable"):
        export_run(run_dir, out, ExportSettings(format="onnx"))
    assert not out.exists()  # not even the folder it made to stage in


@pytest.mark.parametrize("method, options", [("lora", {}), ("dora", {}), ("adalora", {}), ("student-lora", {}),
                                             ("fft", {})])
def test_exported_model_loads_in_plain_transformers_with_the_same_logits(tmp_path, method, options):
    from transformers import AutoModelForSequenceClassification

    run_training(tiny_config(family="bert", method=method, **options), tmp_path / "run", progress=False)
    export_run(tmp_path / "run", tmp_path / "export", score=False)
    plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    trained = load_model(tmp_path / "run")  # the PEFT model itself for LoRA runs
    assert hasattr(trained, "peft_config") == (method != "fft")
    batch = load_tokenizer(tmp_path / "run")(["a great film", "not good at all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, trained(**batch).logits, atol=1e-5)
    assert plain.config.id2label == {0: "negative", 1: "positive"}
    assert not any("lora" in name for name, _ in plain.named_parameters())


def test_export_of_a_derived_student_run(tmp_path):
    run_training(tiny_config(family="minilm", method="fft"), tmp_path / "fft", progress=False)
    run_training(tiny_config(family="minilm", method="kd-lora", teacher=str(tmp_path / "fft")), tmp_path / "kd",
                 progress=False)
    info = export_run(tmp_path / "kd", tmp_path / "export", ExportSettings(format="onnx"))
    assert (tmp_path / "export" / "model.onnx").is_file()
    assert info["agreement"] == 1.0
    assert load_model(tmp_path / "kd", merged=True).config.num_hidden_layers == 1  # tiny teacher 2 -> 1


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta"])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_onnx_graph_of_every_architecture_keeps_batch_and_length_dynamic(tmp_path, family, role):
    import onnxruntime

    from kdlora.data.encode import tiny_tokenizer
    from kdlora.export.onnx_model import write_onnx
    from kdlora.families import get_family

    model, tokenizer = get_family(family).architecture(role).build(2, tiny=True).eval(), tiny_tokenizer()
    names = write_onnx(model, tokenizer, tmp_path / "model.onnx")  # traced on 2 texts
    batch = tokenizer(["a great film", "bad", "not good at all, very bad"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 3 and names == ["input_ids", "attention_mask"]
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    exported = session.run(["logits"], {n: batch[n].numpy() for n in names})[0]
    with torch.no_grad():
        assert np.abs(exported - model(**{n: batch[n] for n in names}).logits.numpy()).max() < 1e-4


def test_export_scores_the_dev_subset_training_scored(tmp_path, monkeypatch):
    """Finding: with max_eval_samples, export subsampled dev with the run's seed, training with DEV_SUBSET_SEED."""
    from kdlora.predict import TorchPredictor
    from kdlora.train import load_data

    config = tiny_config(method="lora", max_eval_samples=4, seed=7)
    run_training(config, tmp_path / "run", progress=False)
    scored, logits = [], TorchPredictor.logits
    monkeypatch.setattr(TorchPredictor, "logits", lambda self, texts: scored.append(list(texts)) or logits(self, texts))
    saved = export_run(tmp_path / "run", tmp_path / "out", ExportSettings())
    dev = list(load_data(config, get_task("sst2"))["validation"].texts)  # 4 of the fixture's 10: training's
    assert scored == [dev, dev]  # the run's model, then the exported one
    assert saved["dev_examples"] == 4
    assert saved["reference_accuracy"] == json.loads((tmp_path / "run" / "metrics.json").read_text())["score"]


def test_a_bf16_run_records_dev_in_bf16_and_its_saved_model_in_fp32(tmp_path, bf16_cpu, monkeypatch):
    """Finding: a bf16 run scores dev under autocast, its saved model is fp32, and nothing said which was which.
    (bf16_cpu: on a CPU without bf16 units torch emulates it; the scores are what this test is about, not speed.)"""
    import kdlora.train.run

    autocast, evaluate = [], kdlora.train.run.evaluate  # the scoring after training: inside autocast or not?

    def spy(model, loaders, task, accelerator):
        layer = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        hook = layer.register_forward_hook(lambda *_: autocast.append(torch.is_autocast_enabled("cpu")))
        try:
            return evaluate(model, loaders, task, accelerator)
        finally:
            hook.remove()

    monkeypatch.setattr(kdlora.train.run, "evaluate", spy)
    config = tiny_config(method="lora", precision="bf16", max_eval_samples=6)
    run_training(config, tmp_path / "run", progress=False)
    assert autocast and not any(autocast)  # training's dev scores ran under bf16 autocast, this one in fp32
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["precision"], metrics["dev_precision"]) == ("bf16", "bf16")
    assert metrics["fp32_score"] == metrics["fp32_metrics"]["accuracy"]  # sst2's score is its accuracy
    saved = export_run(tmp_path / "run", tmp_path / "out", ExportSettings())  # PyTorch fp32: the saved model
    assert saved["reference_accuracy"] == round(metrics["fp32_score"], 6) and saved["dev_examples"] == 6
    fp32_run = run_training(tiny_config(method="lora", max_eval_samples=6), tmp_path / "fp32", progress=False)
    assert (fp32_run.dev_precision, fp32_run.fp32_metrics, fp32_run.fp32_score) == ("fp32", None, None)
