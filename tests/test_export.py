import pytest
import torch

from kdlora.export import export_run
from kdlora.rundir import load_model, load_tokenizer
from kdlora.train import run_training
from train_helpers import tiny_config

torch.set_num_threads(1)


@pytest.mark.parametrize("method, options", [("lora", {}), ("lora", {"use_dora": True}), ("fft", {})])
def test_exported_model_loads_in_plain_transformers_with_the_same_logits(tmp_path, method, options):
    from transformers import AutoModelForSequenceClassification

    run_training(tiny_config(family="bert", method=method, **options), tmp_path / "run", progress=False)
    export_run(tmp_path / "run", tmp_path / "export")
    plain = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    trained = load_model(tmp_path / "run")  # the PEFT model itself for LoRA runs
    assert hasattr(trained, "peft_config") == (method == "lora")
    batch = load_tokenizer(tmp_path / "run")(["a great film", "not good at all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**batch).logits, trained(**batch).logits, atol=1e-5)
    assert plain.config.id2label == {0: "negative", 1: "positive"}
    assert not any("lora" in name for name, _ in plain.named_parameters())


def test_export_of_a_derived_student_run(tmp_path):
    run_training(tiny_config(family="minilm", method="fft"), tmp_path / "fft", progress=False)
    run_training(tiny_config(family="minilm", method="kd-lora", teacher=str(tmp_path / "fft")), tmp_path / "kd",
                 progress=False)
    export_run(tmp_path / "kd", tmp_path / "export")
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert load_model(tmp_path / "kd", merged=True).config.num_hidden_layers == 1  # tiny teacher 2 -> 1
