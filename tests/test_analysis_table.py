from pathlib import Path

import pytest

from kdlora.analysis.table import STUDENT_TEACHER, load_table, name_key
from kdlora.errors import UserError

DATA = Path(__file__).parent / "data" / "analysis"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_paper_table_parses_to_the_seeds_cleaned_figures():
    table = load_table(DATA / "kd-lora-table-ii.csv")
    assert table.ranks == (8, 16, 32, 64)
    assert table.families == ("BERT-base", "RoBERTa-base", "DeBERTa-v3-base")
    assert table.methods == ("LoRA", "KD-LoRA")
    kd = table.row("RoBERTa-base", "KD-LoRA")
    assert (kd.model, kd.line, kd.params_m, kd.memory_mb, kd.inference_s) == (
        "DistilRoBERTa-base", 7, {8: 1.5, 16: 2.9, 32: 5.9, 64: 11.8}, 358.3, 4.44)
    assert [row.family for row in table.rows] == ["BERT-base"] * 3 + ["RoBERTa-base"] * 3 + ["DeBERTa-v3-base"] * 3


def test_headers_ignore_case_and_spaces_and_methods_their_spelling(tmp_path):
    path = write(tmp_path, " model ,METHOD,  rank   4 ,Rank 2,memory  usage, Inference Time ,Notes\n"
                           "bert-base-uncased,fft,110M,110M,1.5 GB,6s,x\n"
                           "bert-base-uncased,Lora,150K,75K,500MB,6.1s,\n"
                           "distilbert-base-uncased,kd_lora,80K,40K,300MB,3 s,\n"
                           "BERT-large,Full Fine-Tuning,340M,340M,3GB,18s,\n"
                           "BERT-large,LoRA,0.8M,0.4M,1GB,18s,\n"
                           "DistilBERT-base,KD LoRA,0.2M,0.1M,400MB,3s,\n")
    # the same model spelled two ways is one model: a duplicate (model, method)
    duplicate = r"row 7, column 'METHOD': a second KD-LoRA row for DistilBERT-base \(the first is row 4\)"
    with pytest.raises(UserError, match=duplicate):
        load_table(path)
    path.write_text("\n".join(path.read_text().splitlines()[:4]) + "\n")
    table = load_table(path)
    assert table.ranks == (2, 4)
    assert [r.method for r in table.rows] == ["FFT", "LoRA", "KD-LoRA"]
    assert table.rows[0].memory_mb == 1536.0
    assert table.rows[2].params_m == {2: 0.04, 4: 0.08}


@pytest.mark.parametrize(("student", "teacher"), [
    ("DistilBERT-base", "BERT-base"), ("distilbert-base-uncased", "bert-base-uncased"),
    ("DistilRoBERTa-base", "RoBERTa-base"), ("microsoft/deberta-v3-small", "microsoft/deberta-v3-base"),
    ("DeBERTa-v3-small", "DeBERTa-v3-base"), ("MiniLM-L3 (derived)", "MiniLM-L6"),
    ("all-MiniLM-L6-v2 (layers 0,2,4)", "sentence-transformers/all-MiniLM-L6-v2"), ("TinyBERT", "BERT-base"),
])
def test_students_find_their_teachers_fft_row(tmp_path, student, teacher):
    path = write(tmp_path, "Model,Method,Rank 8,Memory Usage,Inference Time\n"
                           f"{teacher},FFT,100M,1000MB,2s\n\"{student}\",KD-LoRA,1M,300MB,1s\n")
    assert load_table(path).row(teacher, "KD-LoRA").model == student


def test_model_family_cell_wins_and_may_name_a_registry_family(tmp_path):
    path = write(tmp_path, "Model,Method,Rank 8,Memory Usage,Inference Time,Model Family\n"
                           "BERT-base,FFT,110M,1332MB,6s,\n"
                           "RoBERTa-base,FFT,125M,1500MB,7s,\n"
                           "DistilBERT-base,KD-LoRA,1M,300MB,3s,RoBERTa-base\n"
                           "my-student,KD-LoRA,1M,300MB,3s,bert\n"
                           "my-lora-model,LoRA,2M,500MB,6s,roberta-base\n")
    table = load_table(path)
    assert [r.family for r in table.rows] == ["BERT-base", "RoBERTa-base", "RoBERTa-base", "BERT-base",
                                              "RoBERTa-base"]


def test_student_table_has_the_papers_pairs():
    teachers = {name_key(s): name_key(t) for s, t in STUDENT_TEACHER.items()}
    assert teachers[name_key("DistilBERT")] == name_key("BERT-base")
    assert teachers[name_key("DistilRoBERTa")] == name_key("RoBERTa-base")
    assert teachers[name_key("DeBERTa-v3-small")] == name_key("DeBERTa-v3-base")
    assert teachers[name_key("MiniLM-L3 (derived)")] == name_key("MiniLM-L6")


def test_bom_blank_lines_and_quoted_cells(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes("\ufeffModel,Method,Rank 8,Memory Usage,Inference Time\n\n"
                     'BERT-base,FFT,110M,"1,332.0 MB",6.10s\n\n'
                     'BERT-base,LoRA,2.9M,"463.5 MB",6.22s\n'.encode())
    table = load_table(path)
    assert [(r.line, r.memory_mb) for r in table.rows] == [(3, 1332.0), (5, 463.5)]
