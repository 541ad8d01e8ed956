"""The report's ablation: KD's gain over LoRA on the same student and the smaller model's cost, from the store."""

from kdlora.analysis.ablation import ablations, markdown
from kdlora.analysis.quality import aggregate


def _record(task, method, seed, score):
    return {"key": f"{task}{method}{seed}", "task": task, "family": "minilm", "method": method,
            "rank": None if method == "fft" else 8, "seed": seed, "status": "done", "score": score,
            "metrics": {"accuracy": score}, "flags": [], "memory_kind": None}


# (task, method) -> scores of seeds 42 and 43
SCORES = {("sst2", "lora"): (0.90, 0.88), ("sst2", "kd-lora"): (0.86, 0.86), ("sst2", "student-lora"): (0.82, 0.84),
          ("rte", "lora"): (0.70, 0.72), ("rte", "kd-lora"): (0.66, 0.64), ("rte", "student-lora"): (0.60, 0.62)}


def _aggregates(scores=SCORES):
    return aggregate([_record(t, m, seed, s) for (t, m), pair in scores.items()
                      for seed, s in zip((42, 43), pair, strict=True)])


def test_kd_gain_and_size_cost_are_differences_of_the_cell_medians_in_points():
    (entry,) = ablations(_aggregates(), rank=8)
    # medians: sst2 lora 0.89, kd 0.86, student 0.83; rte lora 0.71, kd 0.65, student 0.61
    assert abs(entry["kd_gain_points"] - 100 * ((0.86 - 0.83) + (0.65 - 0.61)) / 2) < 1e-9  # +3.5
    assert abs(entry["size_cost_points"] - 100 * ((0.89 - 0.83) + (0.71 - 0.61)) / 2) < 1e-9  # +8.0
    assert entry["seeds"] == [42, 43] and entry["tasks"] == ["rte", "sst2"]
    # seed 42: KD (0.86 - 0.82 + 0.66 - 0.60) / 2 = +5.0; seed 43: (0.86 - 0.84 + 0.64 - 0.62) / 2 = +2.0
    assert [round(v, 9) for v in entry["kd_gain_per_seed"]] == [5.0, 2.0]
    assert entry["sentence"] == (
        "MiniLM-L6 (rte, sst2; rank 8): KD adds +3.5 points over LoRA on the same student (Student-LoRA; KD-LoRA vs "
        "Student-LoRA), the smaller model costs +8.0 points (Student-LoRA vs LoRA); medians over seeds 42, 43; KD "
        "per seed +2.0 to +5.0, std 2.1 over 2 seeds, model per seed +7.0 to +9.0, std 1.4 over 2 seeds.")


def test_the_section_appears_exactly_when_student_lora_runs_are_in_the_store():
    with_student = _aggregates()
    lines = markdown(ablations(with_student, 8), with_student)
    assert lines[1] == "## Ablation: the distillation and the smaller model"
    assert lines[3].startswith("- MiniLM-L6 (rte, sst2; rank 8): KD adds +3.5 points")
    without = _aggregates({k: v for k, v in SCORES.items() if k[1] != "student-lora"})
    assert ablations(without, 8) == [] and markdown([], without) == []
    only_student = _aggregates({k: v for k, v in SCORES.items() if k[1] == "student-lora"})
    assert markdown(ablations(only_student, 8), only_student)[-1].startswith("No family has all three")


def test_the_per_seed_spread_pairs_runs_by_seed_under_top_k_median():
    """Finding: with as many selected configurations as seeds, configuration medians were paired with seed numbers.
    KD-LoRA scores 0.90 / 0.80 / 0.70 for seeds 1 / 2 / 3, plus -0.05 / 0 / +0.05 for its three learning rates;
    Student-LoRA 0.80 everywhere. Per seed, KD's gain is the median over the rates of the seed's scores less 0.80:
    +10, 0, -10 points (the configuration medians 0.85 / 0.80 / 0.75 less 0.80 would say +5, 0, -5)."""
    from kdlora.analysis.select import select

    records = []
    for method, base, offsets in (("lora", (0.85,) * 3, (0, 0, 0)), ("student-lora", (0.80,) * 3, (0, 0, 0)),
                                  ("kd-lora", (0.90, 0.80, 0.70), (-0.05, 0, 0.05))):
        for lr, offset in zip((1e-4, 2e-4, 3e-4), offsets, strict=True):
            for seed, score in zip((1, 2, 3), base, strict=True):
                record = _record("sst2", method, seed, score + offset)
                records.append({**record, "key": f"{record['key']}-{lr}", "configuration": str(lr),
                                "config": {"learning_rate": lr}})
    (entry,) = ablations(select(aggregate(records), "top-k-median", 6), rank=None)
    assert entry["seeds"] == [1, 2, 3]
    assert [round(v, 9) for v in entry["kd_gain_per_seed"]] == [10.0, 0.0, -10.0]
    assert "KD per seed -10.0 to +10.0, std 10.0 over 3 seeds" in entry["sentence"]
