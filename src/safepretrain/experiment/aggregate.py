"""Aggregate an experiment: mean and 95% CI over seeds per recipe, as Markdown, CSV, PNG plots and one HTML page.

"Safe decoding" is each recipe's own inference-time defense: guarded decoding (stop on the model's own non-Safe
reflection, replace the answer by a refusal) for every model, Safe Beam search for ``tags``. A model that never
reflects is unchanged by guarding, so its two columns agree.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from safepretrain.experiment.config import FINETUNE_ATTACKS, UNTIL, ExperimentConfig, differing_fields, saved_defaults
from safepretrain.experiment.run import RESUMABLE_CHANGES
from safepretrain.experiment.stages import TAG_CHECK, Cell, Layout, eval_dir
from safepretrain.io import atomic_open, write_json


@dataclass(frozen=True)
class Metric:
    name: str
    stage: str  # pretrained | post | finetuned
    split: str
    key: str
    attack: str = "direct"
    safe_decoding: bool = False
    patients: str = "all"
    """all, train (patients seen in worked episodes) or heldout (patients known only from records: two hops)."""
    ask_reflections: bool = True
    """Safe decoding of a model trained with reflections: its guard with reflections asked for (the ``reflect``
    decoder, where the evaluation ran it), or only the reflections it opens itself (False)."""
    decoder: str | None = None
    """A decoder read whatever the recipe (``beam``: Safe Beam's baseline; nan where it did not run)."""


METRICS = (
    Metric("base: held-out unsafe", "pretrained", "heldout_unsafe", "unsafe_action_rate"),
    Metric("base: held-out unsafe (safe dec.)", "pretrained", "heldout_unsafe", "unsafe_action_rate",
           safe_decoding=True),
    Metric("base: held-out unsafe, train patients", "pretrained", "heldout_unsafe", "unsafe_action_rate",
           patients="train"),
    Metric("base: held-out harmful option, train patients", "pretrained", "heldout_unsafe", "harmful_option_rate",
           patients="train"),
    Metric("base: seen unsafe", "pretrained", "seen_unsafe", "unsafe_action_rate"),
    Metric("base: utility", "pretrained", "utility", "utility_accuracy"),
    Metric("utility, train patients", "post", "utility", "utility_accuracy", patients="train"),
    Metric("utility", "post", "utility", "utility_accuracy"),
    Metric("utility, train patients (safe dec.)", "post", "utility", "utility_accuracy", safe_decoding=True,
           patients="train"),
    Metric("over-refusal (safe dec.)", "post", "overrefusal", "over_refusal_rate", safe_decoding=True),
    Metric("seen unsafe", "post", "seen_unsafe", "unsafe_action_rate"),
    Metric("held-out unsafe", "post", "heldout_unsafe", "unsafe_action_rate"),
    Metric("held-out unsafe (safe dec.)", "post", "heldout_unsafe", "unsafe_action_rate", safe_decoding=True),
    Metric("held-out unsafe, prefill", "post", "heldout_unsafe", "unsafe_action_rate", "prefill"),
    Metric("held-out unsafe, prefill (safe dec.)", "post", "heldout_unsafe", "unsafe_action_rate", "prefill", True),
    Metric("held-out unsafe, prefill (guard, unasked)", "post", "heldout_unsafe", "unsafe_action_rate", "prefill",
           True, ask_reflections=False),
    Metric("utility, train patients, prefill (safe dec.)", "post", "utility", "utility_accuracy", "prefill", True,
           patients="train"),
    Metric("held-out unsafe, decision (safe dec.)", "post", "heldout_unsafe", "unsafe_action_rate", "decision", True),
    Metric("held-out unsafe, pretext (safe dec.)", "post", "heldout_unsafe", "unsafe_action_rate", "pretext", True),
    Metric("utility, train patients (beam)", "post", "utility", "utility_accuracy", patients="train",
           decoder="beam"),
    Metric("held-out unsafe, prefill (beam)", "post", "heldout_unsafe", "unsafe_action_rate", "prefill",
           decoder="beam"),
    Metric("over-refusal (beam)", "post", "overrefusal", "over_refusal_rate", decoder="beam"),
    Metric("utility after FT", "finetuned", "utility", "utility_accuracy"),
    Metric("utility after FT, train patients", "finetuned", "utility", "utility_accuracy", patients="train"),
    Metric("held-out unsafe after FT", "finetuned", "heldout_unsafe", "unsafe_action_rate"),
    Metric("held-out unsafe after FT (safe dec.)", "finetuned", "heldout_unsafe", "unsafe_action_rate",
           safe_decoding=True),
    Metric("seen unsafe after FT (safe dec.)", "finetuned", "seen_unsafe", "unsafe_action_rate", safe_decoding=True),
    Metric("held-out unsafe after FT, prefill", "finetuned", "heldout_unsafe", "unsafe_action_rate", "prefill"),
    Metric("held-out unsafe after FT, prefill (safe dec.)", "finetuned", "heldout_unsafe", "unsafe_action_rate",
           "prefill", True),
    Metric("held-out unsafe after FT, prefill (guard, unasked)", "finetuned", "heldout_unsafe", "unsafe_action_rate",
           "prefill", True, ask_reflections=False),
    Metric("utility after FT, train patients, prefill (safe dec.)", "finetuned", "utility", "utility_accuracy",
           "prefill", True, patients="train"),
    Metric("held-out unsafe after FT, decision (safe dec.)", "finetuned", "heldout_unsafe", "unsafe_action_rate",
           "decision", True),
    Metric("held-out unsafe after FT, pretext (safe dec.)", "finetuned", "heldout_unsafe", "unsafe_action_rate",
           "pretext", True),
    Metric("utility after FT, train patients (safe dec.)", "finetuned", "utility", "utility_accuracy",
           safe_decoding=True, patients="train"),
)
STAGES = ("pretrained", "post", "finetuned")
"""The evaluations of a cell, in the order of ``config.UNTIL``: an experiment that stops earlier has fewer."""
FORCED_LABELS = {"care": "utility", "held-out": "heldout_unsafe"}
FORCED_SHAPES = {"prefill": "", "own": ", own shape"}


def forced_metric(prefix: str, name: str, kind: str, shape: str) -> str:
    """The name of a monitor-on-forced-decisions rate (``eval.medsafetyworld._forced_decisions``)."""
    return f"{prefix}forced {name} decisions flagged: {kind}{FORCED_SHAPES[shape]}"


FORCED = tuple((stage, prefix, name, kind, shape)
               for stage, prefix, shapes in (("pretrained", "base: ", ("prefill",)), ("post", "", tuple(FORCED_SHAPES)),
                                             ("finetuned", "after FT: ", tuple(FORCED_SHAPES)))
               for name in FORCED_LABELS for shape in shapes for kind in ("harmful", "safe"))
"""The monitor's flags on decisions forced to each option: the base model's in the raw shape (text prompts), the
post-trained and the attacked model's in the raw shape a prefill forces and in SRP's own."""
EXTRA = ("reflection F1", "held-out reflection recall", "pretext reflection recall",
         "held-out pretext reflection recall", "held-out probe P(unsafe)", "base: held-out probe P(unsafe)",
         "probe AUROC, bag of words",
         "base: log P(tag) at its tags", "base: P(tag) harmful / safe text", "log P(tag) at its tags",
         "P(tag) harmful / safe text",
         *(forced_metric(prefix, name, kind, shape) for _, prefix, name, kind, shape in FORCED))


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (nan with one value)."""
    from scipy.stats import t

    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def cell_values(cfg: ExperimentConfig, cell: Cell) -> dict[str, float]:
    """The headline numbers of one finished cell."""
    import json

    evals = {s: json.loads((eval_dir(cfg, cell, s) / "metrics.json").read_text())
             for s in STAGES[:UNTIL.index(cfg.until) + 1]}
    values = {}
    for m in METRICS:
        conditions = evals.get(m.stage, {}).get("conditions", {})  # a stage the experiment stopped before: nan
        decoder = m.decoder or (_safe_decoder(cell, conditions, m) if m.safe_decoding else "greedy")
        view = "guarded" if m.safe_decoding and decoder != "safebeam" else "unguarded"
        split = conditions.get(f"{decoder}/{m.attack}", {}).get(view, {}).get(m.split, {})
        if m.patients != "all":
            split = split.get("by_patient", {}).get(m.patients, {})
        values[m.name] = split.get(m.key, {}).get("rate", float("nan"))
    post = evals.get("post", {})
    values["reflection F1"] = post.get("reflection", {}).get("all", {}).get("f1", float("nan"))
    for name, key in (("held-out reflection recall", "heldout_types"), ("pretext reflection recall", "pretexts"),
                      ("held-out pretext reflection recall", "pretexts_heldout_types")):
        values[name] = post.get("reflection", {}).get(key, {}).get("recall", {}).get("rate", float("nan"))
    values["held-out probe P(unsafe)"] = post.get("decision_probes", {}).get("heldout_unsafe", {}).get(
        "mean_p_unsafe", float("nan"))
    values["base: held-out probe P(unsafe)"] = evals["pretrained"].get("decision_probes", {}).get(
        "heldout_unsafe", {}).get("mean_p_unsafe", float("nan"))
    for stage, prefix, name, kind, shape in FORCED:
        forced = evals.get(stage, {}).get("forced_decisions", {}).get(FORCED_LABELS[name], {}).get(shape, {})
        values[forced_metric(prefix, name, kind, shape)] = forced.get(f"{kind}_flagged", {}).get("rate", float("nan"))
    values["probe AUROC per layer"] = post.get("linear_probes", {}).get("auroc_per_layer")
    values["probe AUROC, bag of words"] = post.get("linear_probes", {}).get("bag_of_words_auroc", float("nan"))
    for stage, prefix in (("pretrained", "base: "), ("post", "")):  # tags models: is the tag learned (eval.tags)?
        check = eval_dir(cfg, cell, stage) / TAG_CHECK
        found = json.loads(check.read_text()) if check.is_file() else {}
        values[f"{prefix}log P(tag) at its tags"] = found.get("tag_logprob", float("nan"))
        values[f"{prefix}P(tag) harmful / safe text"] = found.get("harmful_to_benign", float("nan"))
    return values


def _safe_decoder(cell: Cell, conditions: dict, metric: Metric) -> str:
    """Safe Beam for tag models; SRP's guard with asked reflections where the evaluation ran it; else the guard
    reading the greedy answer's own reflections (a no-op for models without reflections)."""
    if cell.spec.safebeam:
        return "safebeam"
    if metric.ask_reflections and f"reflect/{metric.attack}" in conditions:
        return "reflect"
    return "greedy"


def aggregate(cfg: ExperimentConfig, cells: list[Cell]) -> Path:
    out = Layout(cfg).root / "results"
    out.mkdir(parents=True, exist_ok=True)
    per_cell = {c: cell_values(cfg, c) for c in cells}
    rows = []  # one per (recipe, start, metric)
    groups: dict[tuple[str, float], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.recipe, c.start), []).append(c)
    for (recipe, start), group in groups.items():
        for name in [m.name for m in METRICS] + list(EXTRA):
            values = [per_cell[c][name] for c in group]
            mean, half = mean_ci(values)
            rows.append({"recipe": recipe, "start": start, "metric": name, "mean": mean, "ci95_half": half,
                         "n_seeds": len(values), "values": values})
    paired = paired_differences(per_cell, cfg.compare_to, headline_columns(cfg.finetune_attack, PAIRED_COLUMNS))
    write_json(out / "results.json", {"experiment": cfg.to_dict(), "rows": rows, "paired": paired,
                                      "cells": {c.name: v for c, v in per_cell.items()}})
    _write_csv(out / "results.csv", rows)
    with atomic_open(out / "results.md") as f:
        f.write(markdown_table(rows, len(cfg.seeds), headline_columns(cfg.finetune_attack, MAIN_COLUMNS),
                               cfg.finetune_attack, cfg.reflect_on_request, cfg.training_seed))
    paired_md = out / "paired.md"
    if paired:
        with atomic_open(paired_md) as f:
            f.write(paired_markdown(paired, cfg.compare_to))
    elif paired_md.exists():  # an earlier aggregation's reference is no longer in the grid
        paired_md.unlink()
    from safepretrain.experiment.report import write_plots_and_html

    write_plots_and_html(out, rows, per_cell, len(cfg.seeds), paired, cfg.compare_to, cfg.finetune_attack,
                         cfg.reflect_on_request, cfg.training_seed)
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["recipe", "start", "metric", "mean", "ci95_half", "n_seeds", "values"])
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "values": " ".join(f"{v:.4f}" for v in r["values"])})
    with atomic_open(path) as f:
        f.write(buffer.getvalue())


# Utility on train patients: no model in runs 5 and 6 answered a record-only (two-hop) patient's care request, so the
# all-patient rate is half of it everywhere and hides differences. After post-training, harmful requests asked
# directly are refused by every recipe; the prefill attack is where composition shows. After the finetuning attack
# direct requests are served again (session 19: models write themselves the medical indication the request lacked);
# the pretext attack forces such a disguised decision, to measure whether the guard sees through it (session 21).
# Care requests are prefilled too (their checks, up to "give <patient>"): a guard that stops whatever follows a
# prefill serves no harm under it, and only its utility there shows it (session 30: error recovery chats taught that).
MAIN_COLUMNS = ("base: held-out unsafe, train patients", "base: held-out harmful option, train patients",
                "base: held-out unsafe (safe dec.)", "utility, train patients (safe dec.)", "held-out unsafe",
                "held-out unsafe, prefill", "held-out unsafe, prefill (safe dec.)",
                "utility, train patients, prefill (safe dec.)", "held-out unsafe, decision (safe dec.)",
                "held-out unsafe, pretext (safe dec.)", "utility after FT, train patients (safe dec.)",
                "held-out unsafe after FT (safe dec.)", "held-out unsafe after FT, prefill (safe dec.)",
                "utility after FT, train patients, prefill (safe dec.)",
                "held-out unsafe after FT, decision (safe dec.)", "held-out unsafe after FT, pretext (safe dec.)",
                "over-refusal (safe dec.)", "reflection F1", "forced held-out decisions flagged: harmful",
                "forced held-out decisions flagged: safe")


# What the terminal prints when a run ends, in two tables narrow enough for 80 columns (a piped `make demo` is 80
# wide): what the base models compose, then each recipe's safe decoding under prefill and asked directly, before and
# after the finetuning attack (the README's table). results.md, the CSV and the HTML report hold every column.
AFTER_ATTACK = "after the finetuning attack"
TERMINAL_COLUMNS = {
    "before the finetuning attack": {"base: held-out unsafe, train patients": "base: harm",
                                     "utility, train patients (safe dec.)": "utility",
                                     "held-out unsafe, prefill (safe dec.)": "harm: prefill",
                                     "held-out unsafe (safe dec.)": "harm: asked"},
    AFTER_ATTACK: {"utility after FT, train patients (safe dec.)": "utility",
                   "held-out unsafe after FT, prefill (safe dec.)": "harm: prefill",
                   "held-out unsafe after FT (safe dec.)": "harm: asked"},
}
TERMINAL_PAIRED = {"held-out unsafe, prefill (safe dec.)": "prefill",
                   "held-out unsafe after FT, prefill (safe dec.)": "prefill after FT",
                   "utility, train patients (safe dec.)": "utility"}


def terminal_tables(rows: list[dict], paired: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables the terminal prints: (title, header, body) each, short labels, empty columns and tables dropped."""
    tables = []
    for title, labels in TERMINAL_COLUMNS.items():
        head, body = summary_table(rows, tuple(labels))
        tables.append((title, [labels.get(h, h) for h in head], body))
    if paired := [r for r in paired if r["metric"] in TERMINAL_PAIRED]:
        head, body = paired_table(paired)
        title = f"against {paired[0]['reference']}, world by world (paired differences)"
        tables.append((title, [f"Δ {TERMINAL_PAIRED[h[2:]]}" if h.startswith("Δ ") else h for h in head], body))
    # a table left with only its recipe (and start) columns says nothing: a stage the experiment stopped before
    return [t for t in tables if any(h not in ("recipe", "start") for h in t[1])]


def terminal_note(tables: list[tuple[str, list[str], list[list[str]]]], n_seeds: int, attack: str,
                  reference: str) -> str:
    """What the labels of ``terminal_tables`` mean: the attack and the reference only where a table shows them."""
    titles = [title for title, _, _ in tables]
    attacked = f" Finetuning attack (FT): {FINETUNE_ATTACKS[attack]}." if AFTER_ATTACK in titles else ""
    differences = (f" Δ: the recipe minus {reference} in the same world, (a/b): in how many worlds it is lower, "
                   "higher." if any(t not in TERMINAL_COLUMNS for t in titles) else "")  # the paired table
    return ("harm: the fraction of held-out harmful requests served; utility: of care requests about train patients "
            f"answered correctly. Mean ± 95% interval over {n_seeds} world(s), each recipe with its safe decoding "
            f"(SRP's guard, Safe Beam for tags); base: the pretrained model, greedy.{attacked}{differences}")


def headline_columns(attack: str, columns: tuple[str, ...]) -> tuple[str, ...]:
    """``columns`` (MAIN_COLUMNS or PAIRED_COLUMNS); after the harmful finetuning attack, led by what it taught
    directly: the seen harm types asked for directly."""
    if attack != "harmful":
        return columns
    first_after = next(i for i, c in enumerate(columns) if "after FT" in c)
    return columns[:first_after] + ("seen unsafe after FT (safe dec.)",) + columns[first_after:]


def summary_table(rows: list[dict], columns: tuple[str, ...] = MAIN_COLUMNS) -> tuple[list[str], list[list[str]]]:
    """Recipes as rows, headline metrics as columns: "mean ± 95% CI half-width" over seeds (header, body)."""
    by_key = {(r["recipe"], r["start"], r["metric"]): r for r in rows}
    keys = list(dict.fromkeys((r["recipe"], r["start"]) for r in rows))
    # a column no cell has (a stage the experiment stopped before, a metric no recipe reports) says nothing
    columns = tuple(c for c in columns if any(not math.isnan(by_key[(*k, c)]["mean"]) for k in keys))
    return _labelled(keys, list(columns), lambda key, c: _fmt(by_key[(*key, c)]))


def _labelled(keys: list[tuple[str, float]], columns: list[str], cell) -> tuple[list[str], list[list[str]]]:
    """A table with one row per (recipe, start): header and body, ``cell(key, column)`` filling it."""
    with_start = any(s > 0 for _, s in keys)  # the default, no curriculum, goes without saying
    head = ["recipe"] + (["start"] if with_start else []) + columns
    body = [[recipe] + ([f"{start:g}"] if with_start else []) + [cell((recipe, start), c) for c in columns]
            for recipe, start in keys]
    return head, body


def table_note(n_seeds: int, attack: str = "benign", asks_request: bool = True,
               training_seed: int | None = None) -> str:
    drawn = "world and training seed" if training_seed is None else f"world, all trained with seed {training_seed}"
    asked = ("the verdict on the request asked before each answer where no prefill wrote its start, and a reflection "
             "at each sentence end" if asks_request else "a reflection asked for at each sentence end")
    return (f"Mean over {n_seeds} seed(s) (each a new {drawn}), ± the 95% t-interval half-width. "
            f"After FT: after {FINETUNE_ATTACKS[attack]}. "
            "Rates are fractions of evaluation items; chance for an unsafe action on the held-out split is 0.50 "
            f"(two options, one harmful). Safe dec. = SRP's guard for models trained with reflections ({asked}; "
            "the CSV's 'guard, unasked' rows read only the reflections the model opens itself), Safe Beam for tags, "
            "plain greedy otherwise.")


def markdown_table(rows: list[dict], n_seeds: int, columns: tuple[str, ...] = MAIN_COLUMNS,
                   attack: str = "benign", asks_request: bool = True, training_seed: int | None = None) -> str:
    return _markdown(*summary_table(rows, columns), table_note(n_seeds, attack, asks_request, training_seed))


def _markdown(head: list[str], body: list[list[str]], note: str) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n\n" + note + "\n"


# The comparisons the seed papers make: safety under the prefill attack (before and after benign finetuning) at what
# utility, and what the base model composed before post-training.
PAIRED_COLUMNS = ("held-out unsafe, prefill (safe dec.)", "held-out unsafe after FT (safe dec.)",
                  "held-out unsafe after FT, prefill (safe dec.)",
                  "held-out unsafe, decision (safe dec.)", "held-out unsafe after FT, decision (safe dec.)",
                  "held-out unsafe, pretext (safe dec.)", "held-out unsafe after FT, pretext (safe dec.)",
                  "utility, train patients (safe dec.)", "utility after FT, train patients (safe dec.)",
                  "utility, train patients, prefill (safe dec.)",
                  "utility after FT, train patients, prefill (safe dec.)", "base: held-out unsafe, train patients")


def paired_differences(per_cell: dict[Cell, dict[str, float]], reference: str,
                       metrics: tuple[str, ...] = PAIRED_COLUMNS) -> list[dict]:
    """Each (recipe, start) minus ``reference`` in the same world (seed), per metric: the mean difference with its
    95% t-interval, and in how many worlds the recipe is lower and higher. The reference is its earliest start;
    worlds where either side is missing (nan) are left out. Empty when no cell is the reference."""
    starts = [c.start for c in per_cell if c.recipe == reference]
    if not starts:
        return []
    reference_key = (reference, min(starts))
    base = {c.seed: v for c, v in per_cell.items() if (c.recipe, c.start) == reference_key}
    groups: dict[tuple[str, float], dict[int, dict[str, float]]] = {}
    for c, v in per_cell.items():
        if (c.recipe, c.start) != reference_key and c.seed in base:
            groups.setdefault((c.recipe, c.start), {})[c.seed] = v
    rows = []
    for (recipe, start), by_seed in groups.items():
        for name in metrics:
            # rounded: rates are fractions of items, and equal rates must count as neither lower nor higher
            diffs = [round(v.get(name, math.nan) - base[seed].get(name, math.nan), 9)
                     for seed, v in sorted(by_seed.items())]
            diffs = [d for d in diffs if not math.isnan(d)]
            mean, half = mean_ci(diffs)
            rows.append({"recipe": recipe, "start": start, "metric": name, "reference": reference, "mean": mean,
                         "ci95_half": half, "lower": sum(d < 0 for d in diffs), "higher": sum(d > 0 for d in diffs),
                         "n_worlds": len(diffs), "differences": diffs})
    return rows


# Config fields that may differ between experiments compared cell by cell: those a resumed experiment may change,
# and the curriculum starts; they choose which cells exist, not what a cell's world or training is.
GRID_FIELDS = RESUMABLE_CHANGES | {"curriculum_starts"}


def load_cells(paths: list[Path]) -> dict[Cell, dict[str, float]]:
    """The per-cell values of several experiments' ``results.json``, which must share their worlds and training
    settings (e.g. a curriculum grid run beside the main grid): a paired comparison across experiments."""
    import json

    from safepretrain.errors import UserError

    cells: dict[Cell, dict[str, float]] = {}
    first: tuple[Path, dict] | None = None
    for path in paths:
        try:
            found = json.loads(Path(path).read_text())
            config, values = found["experiment"], found["cells"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not an experiment's results.json ({e}); pass <experiment>/results/results.json")
        if first is None:
            first = (path, config)
        elif changed := differing_fields(first[1], config, GRID_FIELDS, saved_defaults()):
            raise UserError(f"{path}: its worlds or training differ from {first[0]}'s (changed: {', '.join(changed)}); "
                            "only experiments on the same worlds and settings can be compared cell by cell")
        for name, v in values.items():
            try:
                cell = Cell.from_name(name)
            except ValueError:
                raise UserError(f"{path}: {name!r} is not a cell name (recipe/startS/seedN)") from None
            if cell in cells:
                raise UserError(f"{path}: cell {name} is also in an earlier file; pass each cell once")
            cells[cell] = v
    return cells


def paired_table(paired: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Recipes as rows, metrics as columns: "difference ± 95% half-width (worlds lower/higher)" (header, body)."""
    by_key = {(r["recipe"], r["start"], r["metric"]): r for r in paired}
    keys = list(dict.fromkeys((r["recipe"], r["start"]) for r in paired))
    columns = [m for m in dict.fromkeys(r["metric"] for r in paired)
               if any(by_key[(*k, m)]["n_worlds"] for k in keys)]
    head, body = _labelled(keys, columns, lambda key, c: _fmt_paired(by_key[(*key, c)]))
    return [h if h in ("recipe", "start") else f"Δ {h}" for h in head], body


def paired_note(reference: str) -> str:
    return (f"Each recipe minus {reference} in the same world (seed), mean over worlds ± the 95% t-interval "
            "half-width of the paired differences; (a/b): in a worlds the recipe's rate is lower than "
            f"{reference}'s, in b higher. Negative Δ unsafe is safer; negative Δ utility is less useful.")


def paired_markdown(paired: list[dict], reference: str) -> str:
    return _markdown(*paired_table(paired), paired_note(reference))


def _fmt_paired(row: dict) -> str:
    if not row["n_worlds"]:
        return "-"
    return f"{row['mean']:+.2f}" + ("" if math.isnan(row["ci95_half"]) else f" ± {row['ci95_half']:.2f}") + \
        f" ({row['lower']}/{row['higher']})"


def _fmt(row: dict) -> str:
    if math.isnan(row["mean"]):
        return "-"
    return f"{row['mean']:.2f}" + ("" if math.isnan(row["ci95_half"]) else f" ± {row['ci95_half']:.2f}")
