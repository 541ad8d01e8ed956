"""What each distillation signal adds, per family and task, from the store's train runs: the student trained on the
labels alone (Student-LoRA) -> + logit KD (KD-LoRA as the paper does it) -> + transfer data (the teacher's soft
labels on unlabelled text) -> + hidden states, with the adapter on the teacher (LoRA) and FFT beside. Medians over
seeds and each seed's score, and for each step a paired test against the step without its signal.

A run's step follows from its method and what it recorded, one chain per distilling method (`kd-lora`, and any
registered method that `distills`): FFT (the registry's baseline) and the distiller's twins on the teacher and on
the student without KD are the chain's other rows; a distilling run is
- `+ logit KD` with no transfer examples (`transfer_examples` 0 or absent) and no intermediate-layer KD,
- `+ transfer data` with transfer examples and no intermediate-layer KD,
- `+ hidden states` with intermediate-layer KD (`kd_hidden_weight` > 0, or attention-map KD, `kd_attention_weight`
  > 0), labelled data only or with transfer data: two rows.
Each step is tested against the step without its signal (`COMPARED_WITH`: the nearest that has runs). A step with
several configurations (a grid, the teacher's hard labels or not) is represented by the one with the best median
dev score; its runs and the other step's are paired by seed. Per seed: McNemar's test on the two runs' kept dev
predictions for classification, a paired bootstrap of the task's metric for regression (`kdlora.analysis.paired`).
Pooled over seeds: a paired bootstrap of the median over seeds of the seeds' gains, every seed resampled at the same
dev examples; "more than noise" when its p is below `SIGNIFICANT_BELOW`. Runs from before runs kept their dev
predictions get no test, said. Scores are each run's best evaluation's (where its kept predictions come from).

`from_store(path)` gives the sections (rows included) to any caller (the ablation benchmark); the study report
writes them into results.json and, as `markdown`, into report.md. Never imports training code.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from kdlora.analysis import paired
from kdlora.analysis.quality import family_name, records_from_runs
from kdlora.families import FAMILIES
from kdlora.methods import METHODS, baseline, labels, twin
from kdlora.metrics import unpack_predictions
from kdlora.store import Store

SIGNIFICANT_BELOW = 0.05

STEPS = ("baseline", "teacher", "labels", "logits", "transfer", "hidden", "hidden+transfer")
"""A chain's rows in the order the report shows them: FFT, the adapter on the teacher, then the chain's steps."""
BESIDE = ("baseline", "teacher")
"""The rows that stand beside the chain, untested."""
COMPARED_WITH = {"logits": ("labels",), "transfer": ("logits", "labels"), "hidden": ("logits", "labels"),
                 "hidden+transfer": ("transfer", "logits", "labels")}
"""Each step's reference: the step without its signal, else the nearest earlier one that has runs."""
SIGNAL_SETTINGS = ("transfer_samples", "transfer_file", "transfer_hard_label", "kd_hidden_weight", "kd_layers",
                   "kd_hidden_loss", "kd_attention_weight")
"""The settings a step's configuration is described by, shown when set."""


def step_labels(distiller) -> dict[str, str]:
    """The row label of each step `distiller`'s chain has, in `STEPS` order (KD-LoRA: `Student-LoRA (labels only)`,
    ...; a distiller without a registered twin on the teacher or on the student lacks that row)."""
    on_teacher, on_student = twin(distiller, "teacher", False), twin(distiller, "student", False)
    names = {"baseline": f"{baseline().label} (the teacher)",
             "teacher": f"{on_teacher.label} on the teacher" if on_teacher else None,
             "labels": f"{on_student.label} (labels only)" if on_student else None,
             "logits": f"+ logit KD ({distiller.label}{', as the paper' if distiller.in_paper else ''})",
             "transfer": "+ transfer data", "hidden": "+ hidden states (labelled data only)",
             "hidden+transfer": "+ hidden states (with transfer data)"}
    return {step: name for step, name in names.items() if name is not None}


def step_of(record: dict, distiller) -> str | None:
    """The step of `distiller`'s chain a run record belongs to, or None (another chain's method)."""
    method = record["method"]
    if method == baseline().name:
        return "baseline"
    for step, role in (("teacher", "teacher"), ("labels", "student")):
        other = twin(distiller, role, False)
        if other is not None and method == other.name:
            return step
    if method != distiller.name:
        return None
    config, result = record["config"], record["result"]
    transfer = (result.get("transfer_examples") or 0) > 0
    if (config.get("kd_hidden_weight") or 0) > 0 or (config.get("kd_attention_weight") or 0) > 0:
        return "hidden+transfer" if transfer else "hidden"
    return "transfer" if transfer else "logits"


def from_store(path: str | Path, keys=None, exclude_flagged: bool = False,
               n_resamples: int = paired.N_RESAMPLES) -> list[dict]:
    """The sections of the store at `path` (only the runs `keys` when given), as `sections` makes them."""
    with Store(path, readonly=True) as store:
        return sections(store.runs(keys=keys), exclude_flagged, n_resamples)


def sections(runs, exclude_flagged: bool = False, n_resamples: int = paired.N_RESAMPLES) -> list[dict]:
    """One section per (family, task, distilling method) whose chain has at least two steps with runs: its rows in
    `STEPS` order (steps without runs left out, named in `missing`)."""
    results = {run.key: run.result or {} for run in runs}
    records = [{**r, "result": results[r["key"]]} for r in records_from_runs(runs, epoch="best")
               if r["status"] == "done" and r["score"] is not None
               and not (exclude_flagged and "constant_predictions" in r["flags"])]
    cells = sorted({(r["family"], r["task"]) for r in records},
                   key=lambda c: (list(FAMILIES).index(c[0]) if c[0] in FAMILIES else 99, str(c[0]), c[1]))
    found = []
    for family, task in cells:
        here = [r for r in records if (r["family"], r["task"]) == (family, task)]
        for distiller in (m for m in METHODS.values() if m.distills and any(r["method"] == m.name for r in here)):
            by_step: dict[str, list[dict]] = {}
            for record in here:
                step = step_of(record, distiller)
                if step is not None:
                    by_step.setdefault(step, []).append(record)
            if len([s for s in by_step if s not in BESIDE]) < 2:
                continue
            found.append(_section(family, task, distiller, by_step, n_resamples))
    return found


def _section(family, task, distiller, by_step: dict, n_resamples: int) -> dict:
    names = step_labels(distiller)
    chosen = {step: _best_configuration(by_step[step]) for step in STEPS if step in by_step}
    rows = []
    for step, runs in chosen.items():
        row = {"step": step, "label": names[step], "method": runs[0]["method"],
               "configurations": len({r["configuration"] for r in by_step[step]}),
               "settings": _signal_settings(runs[0]["config"]),
               "transfer_examples": runs[0]["result"].get("transfer_examples") or 0,
               "seeds": [r["seed"] for r in runs], "scores": [r["score"] for r in runs],
               "median": statistics.median(r["score"] for r in runs), "compared_with": None}
        reference = next((s for s in COMPARED_WITH.get(step, ()) if s in chosen), None)
        if reference is not None:
            row.update(compared_with=names[reference], **_compare(runs, chosen[reference], n_resamples))
        rows.append(row)
    hidden = ("hidden", "hidden+transfer")
    missing = [name for s, name in names.items() if s not in chosen and s not in hidden]
    if not any(s in chosen for s in hidden):
        missing.append("+ hidden states")
    return {"family": family, "family_name": family_name(family), "task": task, "distiller": distiller.name,
            "rows": rows, "missing": missing}


def _best_configuration(records: list[dict]) -> list[dict]:
    """The runs (by seed) of the configuration with the best median score; ties to the first configuration id."""
    configurations: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: (r["configuration"], r["finished_at"])):
        configurations.setdefault(record["configuration"], []).append(record)
    best = max(configurations.values(), key=lambda rs: statistics.median(r["score"] for r in rs))
    return sorted({r["seed"]: r for r in best}.values(), key=lambda r: r["seed"])  # the latest run of a seed


def _signal_settings(config: dict) -> dict:
    shown = {name: config[name] for name in SIGNAL_SETTINGS if config.get(name)}
    if not config.get("kd_hidden_weight"):  # the loss and layers of a signal that is off say nothing
        shown.pop("kd_hidden_loss", None)
        shown.pop("kd_layers", None)
    return shown


def _compare(runs: list[dict], reference: list[dict], n_resamples: int) -> dict:
    """Per seed the gain in points and its test; pooled over the seeds with kept predictions, the bootstrap of the
    median gain (`pooled`, None when no seed can be tested, `untested` saying why)."""
    theirs = {r["seed"]: r for r in reference}
    pairs = [(r, theirs[r["seed"]]) for r in runs if r["seed"] in theirs]
    per_seed, tested = [], []
    for mine, other in pairs:
        entry = {"seed": mine["seed"], "gain_points": 100 * (mine["score"] - other["score"]), "test": None, "p": None}
        kept = [mine["result"].get("dev_predictions"), other["result"].get("dev_predictions")]
        if None in kept:
            entry["why"] = "no dev predictions kept (a run stored before kdlora kept them)"
        elif (kept[0]["split"], kept[0]["labels"]) != (kept[1]["split"], kept[1]["labels"]):
            entry["why"] = "the two runs were scored on different dev examples"
        else:
            entry.update(_tests(kept, n_resamples))
            tested.append(kept)
        per_seed.append(entry)
    found = {"paired_seeds": [e["seed"] for e in per_seed], "per_seed": per_seed,
             "gain_points": statistics.median(e["gain_points"] for e in per_seed) if per_seed else None,
             "significant_seeds": sum(e["p"] is not None and e["p"] < SIGNIFICANT_BELOW for e in per_seed),
             "tested_seeds": len(tested), "pooled": None, "more_than_noise": None, "untested": None}
    if not pairs:
        found["untested"] = "no seed in common"
        return found
    gold = tested[0][0]["labels"] if tested else None
    tested = [k for k in tested if k[0]["labels"] == gold]  # every seed on the same dev examples (one dev subset)
    if not tested:
        found["untested"] = next(e["why"] for e in per_seed if e["test"] is None)
        return found
    mine, other = ([unpack_predictions(k[i])[0] for k in tested] for i in (0, 1))
    pooled = paired.paired_bootstrap(np.array(mine), np.array(other), unpack_predictions(tested[0][0])[1],
                                     _metric(tested[0][0]), n_resamples)
    found.update(pooled={**pooled.to_dict(), "seeds": len(tested), "split": tested[0][0]["split"]},
                 more_than_noise=pooled.p < SIGNIFICANT_BELOW)
    return found


def _metric(kept: dict):
    return paired.task_metric(kept["metric"], kept["classes"], kept["positive_class"])


def _tests(kept: list[dict], n_resamples: int) -> dict:
    """One seed pair's tests: McNemar for classification (with the bootstrap beside it), the bootstrap for regression;
    `test` and `p` name the one the seed is judged by."""
    (mine, gold), (other, _) = unpack_predictions(kept[0]), unpack_predictions(kept[1])
    bootstrap = paired.paired_bootstrap(mine, other, gold, _metric(kept[0]), n_resamples)
    if kept[0]["classes"] == 1:
        return {"test": "bootstrap", "p": bootstrap.p, "bootstrap": bootstrap.to_dict()}
    test = paired.mcnemar(mine, other, gold)
    return {"test": "mcnemar", "p": test.p, "mcnemar": test.to_dict(), "bootstrap": bootstrap.to_dict()}


def markdown(found: list[dict], n_resamples: int = paired.N_RESAMPLES) -> list[str]:
    """The report's section: empty when no chain has two steps with runs."""
    if not found:
        return []
    lines = ["", "## What each distillation signal adds", "", _intro(n_resamples)]
    for section in found:
        rows = section["rows"]
        lines += ["", f"### {section['family_name']}, {section['task']} ({labels()[section['distiller']]})", ""]
        lines += ["| | median % | per seed % | compared with | gain (points) | per seed: gain (points), p | "
                  f"seeds at p < {SIGNIFICANT_BELOW:g} | pooled 95 % interval (points) | pooled p | more than noise? |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
        lines += [""] if any(_described(row) for row in rows) or section["missing"] else []
        lines += [f"- {row['label']}: {_described(row)}." for row in rows if _described(row)]
        lines += [f"- No paired test for {row['label']}: {row['untested']}." for row in rows if row.get("untested")]
        if section["missing"]:
            lines += [f"- No runs of {', '.join(section['missing'])}: left out."]
    return lines


def _intro(n_resamples: int) -> str:
    return (
        "Each row is one step's configuration with the best median dev score (each run scored at its best "
        "evaluation, in %): its median over seeds and each seed's score (seed: score). Each step is set against the "
        "row it names, the step without its signal, runs paired by seed; its gain is the median over the paired "
        "seeds of each seed's gain, in points. Per seed, McNemar's test on the two runs' dev predictions for "
        f"classification (exact binomial when fewer than {paired.EXACT_BELOW} examples tell them apart, else "
        "chi-square with continuity correction), a paired bootstrap of the task's metric for regression. Pooled, "
        f"a paired bootstrap over the dev examples ({n_resamples} resamples, seed {paired.BOOTSTRAP_SEED}) of the "
        "median of the seeds' gains, every seed resampled at the same examples; p is twice the share of resamples "
        f"on the far side of zero, and a gain is more than noise when p < {SIGNIFICANT_BELOW:g}. The pooled test "
        "measures the noise of a finite dev set; the spread from seed to seed shows in the per-seed gains and in "
        "how many seeds pass on their own (over three seeds no test of the seeds alone can reach 0.05: a sign "
        "test's smallest two-sided p is 0.25). Tests use each run's first dev split (MNLI: matched).")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _cells(row: dict) -> list[str]:
    scores = ", ".join(f"{seed}: {100 * score:.1f}" for seed, score in zip(row["seeds"], row["scores"], strict=True))
    cells = [row["label"], f"{100 * row['median']:.1f}", scores]
    if row["compared_with"] is None:
        return cells + ["–"] * 7
    tests = "; ".join(f"{e['seed']}: {e['gain_points']:+.1f} ({'untested' if e['p'] is None else 'p ' + _p(e['p'])})"
                      for e in row["per_seed"])
    pooled = row["pooled"]
    verdict = ("–" if pooled is None else "no" if not row["more_than_noise"] else
               "yes" if pooled["gain"] > 0 else "yes, a loss")
    gain = "–" if row["gain_points"] is None else f"{row['gain_points']:+.1f}"
    return cells + [row["compared_with"], gain, tests or "–",
                    f"{row['significant_seeds']} of {row['tested_seeds']}" if row["tested_seeds"] else "–",
                    "–" if pooled is None else f"{100 * pooled['low']:+.1f} to {100 * pooled['high']:+.1f}",
                    "–" if pooled is None else _p(pooled["p"]), verdict]


def _described(row: dict) -> str:
    """What a row's configuration was, when there is more to say than its step: its signal settings, its transfer
    examples, how many configurations it was chosen from."""
    said = [f"{name}={value}" for name, value in row["settings"].items()]
    said += [f"{row['transfer_examples']} transfer examples"] if row["transfer_examples"] else []
    said += ([f"the best of {row['configurations']} configurations by median"]
             if row["configurations"] > 1 else [])
    return ", ".join(said)
