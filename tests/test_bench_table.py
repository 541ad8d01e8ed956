import csv
import json
from pathlib import Path

import pytest

from kdlora.bench.table import empty_cells, table_ii_rows, write_bench_outputs

DATA = Path(__file__).parent / "data" / "bench"


@pytest.fixture
def result():
    return json.loads((DATA / "bench-small.json").read_text())


def test_rows_follow_the_papers_layout(result):
    table = table_ii_rows(result)
    assert table == [
        {"Model": "BERT-base", "Method": "FFT", "Rank 8": "109.483778M", "Rank 16": "109.483778M",
         "Memory Usage": "3123.5MB", "Inference Time": "20.46s", "Model Family": "bert"},
        {"Model": "BERT-base", "Method": "LoRA", "Rank 8": "0.296450M", "Rank 16": "0.591362M",
         "Memory Usage": "1999.0MB", "Inference Time": "20.50s", "Model Family": "bert"},
        {"Model": "DistilBERT-base", "Method": "KD-LoRA", "Rank 8": "0.739586M", "Rank 16": "0.887042M",
         "Memory Usage": "", "Inference Time": "", "Model Family": "bert"},
    ]
    assert empty_cells(table) == ["DistilBERT-base KD-LoRA: Memory Usage", "DistilBERT-base KD-LoRA: Inference Time"]


def test_csv_header_is_the_papers_plus_model_family(result, tmp_path):
    write_bench_outputs(result, tmp_path)
    with open(DATA / "paper-table-ii.csv", newline="") as f:
        paper_header = next(csv.reader(f))
    with open(tmp_path / "table-ii.csv", newline="") as f:
        rows = list(csv.reader(f))
    ranks_in_paper = [c for c in paper_header if c.startswith("Rank")]
    assert rows[0] == [c for c in paper_header if c not in ranks_in_paper[2:]] + ["Model Family"]
    assert len(rows) == 4
    assert json.loads((tmp_path / "bench.json").read_text()) == result


def test_a_failed_write_leaves_earlier_outputs(result, tmp_path):
    (tmp_path / "bench.json").write_text("{}")
    broken = {**result, "rows": result["rows"] + [{"family": "nope", "method": "fft", "rank": None}]}
    with pytest.raises(Exception, match="nope"):
        write_bench_outputs(broken, tmp_path)
    assert (tmp_path / "bench.json").read_text() == "{}"
    assert not (tmp_path / "table-ii.csv").exists()
