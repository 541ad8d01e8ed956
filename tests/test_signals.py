"""The report's "What each distillation signal adds": steps from stored runs (built directly in a tiny store), medians
and per-seed scores, each step's paired test against the step without its signal, and what is left out."""

import json

import numpy as np
import pytest

from kdlora.analysis import paired
from kdlora.analysis.signals import from_store, markdown, sections
from kdlora.analysis.store_report import write_study_report
from kdlora.data.tasks import TASKS
from kdlora.keys import run_key
from kdlora.metrics import kept_predictions
from kdlora.store import Store

GOLD = [0, 1, 1, 0]


def _predictions(right, gold=GOLD):
    """Class predictions right on the examples `right` marks (1) and wrong on the others."""
    return [g if r else 1 - g for g, r in zip(gold, right, strict=True)]


def _add(store, method, seed, right=None, config=None, result=None, task="sst2", gold=GOLD, score=None):
    """One done train run of `method` at `seed`: its score the accuracy of `right` (or `score`), its kept dev
    predictions those of `right` (none when `right` is None: a run stored before they were kept)."""
    config = {"task": task, "family": "minilm", "method": method, "rank": None if method == "fft" else 8,
              "seed": seed, **(config or {})}
    key = run_key("train", config)
    store.start(key, "train", f"train {task} minilm {method} s{seed} {config}", config,
                fields={k: config[k] for k in ("task", "family", "method", "rank", "seed")})
    score = score if right is None else sum(right) / len(right)
    found = {"status": "done", "score": score, "metrics": {"accuracy": score}, **(result or {})}
    if right is not None:
        found["dev_predictions"] = kept_predictions(TASKS[task], "validation", _predictions(right, gold), gold)
    store.finish(key, found)


TRANSFER = ({"transfer_samples": "all"}, {"transfer_examples": 6040})


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "r.db") as store:
        for seed in (1, 2):
            _add(store, "fft", seed, [1, 1, 1, 1])
            # seed 1: KD right where Student-LoRA is wrong on all four examples; seed 2: the same predictions
            _add(store, "student-lora", seed, [0, 0, 0, 0] if seed == 1 else [1, 1, 0, 0])
            _add(store, "kd-lora", seed, [1, 1, 1, 1] if seed == 1 else [1, 1, 0, 0])
            # transfer data: the same predictions as logit KD; with the teacher's hard labels worse (not chosen)
            _add(store, "kd-lora", seed, [1, 1, 1, 1] if seed == 1 else [1, 1, 0, 0], *TRANSFER)
            _add(store, "kd-lora", seed, [0, 0, 0, 0], {**TRANSFER[0], "transfer_hard_label": True}, TRANSFER[1])
        # hidden states on labelled data only, one seed, stored without predictions (as before they were kept)
        _add(store, "kd-lora", 1, None, {"kd_hidden_weight": 1.0, "kd_hidden_loss": "mse", "kd_layers": None},
             score=0.75)
        yield store


def test_each_step_against_the_step_without_its_signal_exact_table(store):
    (section,) = sections(store.runs(), n_resamples=200)
    assert (section["family"], section["task"], section["distiller"]) == ("minilm", "sst2", "kd-lora")
    assert section["missing"] == ["LoRA on the teacher"]
    lines = markdown([section], n_resamples=200)
    assert lines[1] == "## What each distillation signal adds"
    assert "(200 resamples, seed 0)" in lines[3] and "exact binomial when fewer than 25" in lines[3]
    table = lines[lines.index("### MiniLM-L6, sst2 (KD-LoRA)") + 2:]
    assert table[:15] == [
        "| | median % | per seed % | compared with | gain (points) | per seed: gain (points), p | seeds at p < 0.05 | "
        "pooled 95 % interval (points) | pooled p | more than noise? |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| FFT (the teacher) | 100.0 | 1: 100.0, 2: 100.0 | – | – | – | – | – | – | – |",
        "| Student-LoRA (labels only) | 25.0 | 1: 0.0, 2: 50.0 | – | – | – | – | – | – | – |",
        # per seed: McNemar b = 4, c = 0 -> exact 2 * P(X <= 0 | 4, 1/2) = 2 / 16; seed 2 no discordant pair -> 1.
        # pooled: every resample's gain is seed 1's 100 and seed 2's 0 points: median (of two: mean) 50, p 0
        "| + logit KD (KD-LoRA, as the paper) | 75.0 | 1: 100.0, 2: 50.0 | Student-LoRA (labels only) | +50.0 | "
        "1: +100.0 (p 0.125); 2: +0.0 (p 1.000) | 0 of 2 | +50.0 to +50.0 | < 0.001 | yes |",
        "| + transfer data | 75.0 | 1: 100.0, 2: 50.0 | + logit KD (KD-LoRA, as the paper) | +0.0 | "
        "1: +0.0 (p 1.000); 2: +0.0 (p 1.000) | 0 of 2 | +0.0 to +0.0 | 1.000 | no |",
        "| + hidden states (labelled data only) | 75.0 | 1: 75.0 | + logit KD (KD-LoRA, as the paper) | -25.0 | "
        "1: -25.0 (untested) | – | – | – | – |",
        "",
        "- + transfer data: transfer_samples=all, 6040 transfer examples, the best of 2 configurations by median.",
        "- + hidden states (labelled data only): kd_hidden_weight=1.0, kd_hidden_loss=mse.",
        "- No paired test for + hidden states (labelled data only): no dev predictions kept (a run stored before "
        "kdlora kept them).",
        "- No runs of LoRA on the teacher: left out.",
    ]
    assert len(table) == 12


def test_the_rows_carry_each_seeds_test_and_the_pooled_one(store):
    rows = {row["step"]: row for row in sections(store.runs(), n_resamples=200)[0]["rows"]}
    logits = rows["logits"]
    assert logits["seeds"] == [1, 2] and logits["scores"] == [1.0, 0.5] and logits["median"] == 0.75
    assert [(e["seed"], e["gain_points"], e["test"]) for e in logits["per_seed"]] == [
        (1, 100.0, "mcnemar"), (2, 0.0, "mcnemar")]
    assert logits["per_seed"][0]["mcnemar"] == {"test": "mcnemar", "only_a": 4, "only_b": 0, "statistic": None,
                                                "p": 2 / 16, "exact": True}
    assert logits["pooled"] == {"test": "bootstrap", "gain": 0.5, "low": 0.5, "high": 0.5, "p": 0.0,
                                "n_resamples": 200, "seeds": 2, "split": "validation"}
    assert logits["more_than_noise"] is True and logits["significant_seeds"] == 0 and logits["tested_seeds"] == 2
    assert rows["transfer"]["settings"] == {"transfer_samples": "all"} and rows["transfer"]["configurations"] == 2
    assert rows["hidden"]["pooled"] is None and rows["hidden"]["tested_seeds"] == 0
    assert rows["baseline"]["compared_with"] is None and "per_seed" not in rows["baseline"]


def test_mcnemar_per_seed_and_the_pooled_bootstrap_over_seeds(tmp_path):
    # 16 examples: 0-9 only KD right, 10-11 only Student-LoRA right, 12-13 both, 14-15 neither
    gold = [i % 2 for i in range(16)]
    student, kd = [0] * 10 + [1] * 4 + [0] * 2, [1] * 10 + [0] * 2 + [1] * 2 + [0] * 2
    # seed 2: 10-12 only KD right, 0 only Student-LoRA right, 1-9 and 13 both, 14-15 neither
    student_2, kd_2 = [1] * 10 + [0] * 3 + [1] + [0] * 2, [0] + [1] * 13 + [0] * 2
    with Store(tmp_path / "r.db") as store:
        for seed, (mine, theirs) in ((1, (kd, student)), (2, (kd_2, student_2))):
            _add(store, "student-lora", seed, theirs, gold=gold)
            _add(store, "kd-lora", seed, mine, gold=gold)
    (section,) = from_store(tmp_path / "r.db", n_resamples=300)
    (_, logits) = section["rows"]
    # seed 1: 2 * P(X <= 2 | 12, 1/2) = 2 * (1 + 12 + 66) / 4096; seed 2: 2 * P(X <= 1 | 4, 1/2) = 2 * (1 + 4) / 16
    assert [e["p"] for e in logits["per_seed"]] == pytest.approx([2 * 79 / 4096, 10 / 16], rel=1e-12)
    assert [e["gain_points"] for e in logits["per_seed"]] == pytest.approx([100 * 8 / 16, 100 * 2 / 16])
    assert logits["significant_seeds"] == 1 and logits["gain_points"] == pytest.approx((50 + 12.5) / 2)
    # the pooled test is `paired_bootstrap` of the seeds' predictions stacked, one row per seed (tested on its own)
    expected = paired.paired_bootstrap(
        np.array([_predictions(kd, gold), _predictions(kd_2, gold)]),
        np.array([_predictions(student, gold), _predictions(student_2, gold)]),
        np.array(gold), paired.task_metric("accuracy"), 300)
    assert {k: logits["pooled"][k] for k in ("gain", "low", "high", "p")} == \
        {"gain": expected.gain, "low": expected.low, "high": expected.high, "p": expected.p}
    assert expected.gain == (8 / 16 + 2 / 16) / 2  # the median of two seeds' accuracy gains


def test_a_regression_task_is_judged_by_the_bootstrap(tmp_path):
    gold = [0.5, 1.5, 2.0, 3.25, 4.0, 4.75]
    kept = kept_predictions(TASKS["stsb"], "validation", [0.25, 1.0, 2.5, 3.0, 4.5, 4.0], gold)
    with Store(tmp_path / "r.db") as store:
        for method in ("student-lora", "kd-lora"):
            config = {"task": "stsb", "family": "minilm", "method": method, "rank": 8, "seed": 1}
            key = run_key("train", config)
            store.start(key, "train", method, config, fields=config)
            store.finish(key, {"status": "done", "score": 0.9, "metrics": {"pearson_spearman": 0.9},
                               "dev_predictions": kept})
        (section,) = sections(store.runs(), n_resamples=50)
    (seed,) = section["rows"][1]["per_seed"]
    assert seed["test"] == "bootstrap" and "mcnemar" not in seed
    assert (seed["bootstrap"]["gain"], seed["bootstrap"]["low"], seed["bootstrap"]["high"], seed["p"]) == \
        (0.0, 0.0, 0.0, 1.0)


def test_no_section_without_two_steps_of_a_chain(tmp_path):
    with Store(tmp_path / "r.db") as store:
        for method in ("fft", "lora", "kd-lora"):  # the paper's three: one step of the chain only
            _add(store, method, 1, [1, 1, 0, 0])
        assert sections(store.runs()) == [] and markdown([]) == []


def test_the_study_report_writes_the_section_and_its_json(store, tmp_path):
    results = write_study_report(store, tmp_path / "report")
    assert [row["step"] for row in results["distillation_steps"][0]["rows"]] == [
        "baseline", "labels", "logits", "transfer", "hidden"]
    written = json.loads((tmp_path / "report" / "results.json").read_text())
    assert written["distillation_steps"][0]["rows"][2]["pooled"]["p"] == 0.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## What each distillation signal adds" in report
    assert "| + transfer data | 75.0 | 1: 100.0, 2: 50.0 | + logit KD (KD-LoRA, as the paper) | +0.0 |" in report


def test_a_distiller_without_a_student_twin_has_its_own_chain_and_says_what_it_lacks(tmp_path):
    with Store(tmp_path / "r.db") as store:
        _add(store, "kd-dora", 1, [1, 1, 0, 0])
        _add(store, "kd-dora", 1, [1, 1, 1, 0], *TRANSFER)
        (section,) = sections(store.runs(), n_resamples=50)
    assert section["distiller"] == "kd-dora"
    assert [(row["label"], row["compared_with"]) for row in section["rows"]] == [
        ("+ logit KD (KD-DoRA)", None), ("+ transfer data", "+ logit KD (KD-DoRA)")]
    assert section["missing"] == ["FFT (the teacher)", "DoRA on the teacher", "+ hidden states"]
