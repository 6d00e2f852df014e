"""The experiment's plots (PNG) and its one-page HTML report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from safepretrain.experiment.stages import Cell

MARKERS = "osD^vP*Xp<>h"
"""One per recipe where colours alone would repeat or be hard to tell apart."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, png: Path) -> None:
    # bbox "tight" keeps a legend drawn outside the axes in the picture
    fig.savefig(png, bbox_inches="tight")
    plt.close(fig)


def _series(rows: list[dict], metric: str) -> tuple[list[str], list[float], list[float], list[list[float]]]:
    """Labels, means, 95% half-widths (0 where one seed gives none) and each seed's values of one metric."""
    chosen = [r for r in rows if r["metric"] == metric]
    labels = [r["recipe"] + (f" @{r['start']:g}" if r["start"] else "") for r in chosen]
    halves = [0.0 if math.isnan(r["ci95_half"]) else r["ci95_half"] for r in chosen]
    return labels, [r["mean"] for r in chosen], halves, [r["values"] for r in chosen]


def _within_rates(means: list[float], halves: list[float]) -> list[list[float]]:
    """Error bars as (below, above) cut at 0 and 1: with three seeds a t-interval can pass the ends, where no rate
    lies (the tables give the interval itself)."""
    return [[min(h, m) for m, h in zip(means, halves)], [min(h, 1 - m) for m, h in zip(means, halves)]]


def _reached(rows: list[dict], series: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (name, metric) series some recipe measured: stages an experiment did not reach (``until``) take no room
    and no legend entry."""
    return [(n, m) for n, m in series if any(not math.isnan(v) for v in _series(rows, m)[1])] or series[:1]


def _legend_outside(ax) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def plot_unsafe_rates(rows: list[dict], png: Path, attack: str = "benign") -> None:
    """Held-out unsafe-action rate per recipe, the README's and the terminal's columns: the base model (greedy, train
    patients, where composition is read), after post-training (asked directly and under the prefill attack, with
    safe decoding; under prefill unguarded too) and after the finetuning attack (asked directly and under prefill,
    safe decoding). Bars are means over seeds with their 95% intervals; dots are the seeds (worlds) themselves."""
    plt = _pyplot()
    series = [("base model, train patients", "base: held-out unsafe, train patients"),
              ("post-trained, asked directly, safe decoding", "held-out unsafe (safe dec.)"),
              ("post-trained, prefill", "held-out unsafe, prefill"),
              ("post-trained, prefill, safe decoding", "held-out unsafe, prefill (safe dec.)"),
              (f"after {attack} FT, asked directly, safe decoding", "held-out unsafe after FT (safe dec.)"),
              (f"after {attack} FT, prefill, safe decoding", "held-out unsafe after FT, prefill (safe dec.)")]
    labels = _series(rows, series[0][1])[0]
    series = _reached(rows, series)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(labels)), 4), dpi=120)
    width = 0.8 / len(series)
    for i, (name, metric) in enumerate(series):
        _, means, halves, seeds = _series(rows, metric)
        where = [k + i * width for k in range(len(labels))]
        ax.bar(where, means, width, yerr=_within_rates(means, halves), capsize=2, label=name)
        dots = [(x, v) for x, values in zip(where, seeds) for v in values]
        ax.scatter([x for x, _ in dots], [v for _, v in dots], s=6, color="black", zorder=3,
                   label="each world" if i == 0 else None)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance (random option)")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylabel("held-out unsafe-action rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"Held-out harmful requests served ({_over_worlds(rows)})", fontsize=9)
    _legend_outside(ax)
    _save(plt, fig, png)


def plot_utility_vs_safety(rows: list[dict], png: Path) -> None:
    """One point per recipe, each its own colour and marker (named in the legend, as labels beside points that
    land together would overlap)."""
    plt = _pyplot()
    labels, utility, u_err, _ = _series(rows, "utility, train patients (safe dec.)")
    _, unsafe, s_err, _ = _series(rows, "held-out unsafe, prefill (safe dec.)")
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours = plt.get_cmap("tab10").colors
    for i, label in enumerate(labels):
        ax.errorbar([unsafe[i]], [utility[i]], xerr=_within_rates([unsafe[i]], [s_err[i]]),
                    yerr=_within_rates([utility[i]], [u_err[i]]), fmt=MARKERS[i % len(MARKERS)],
                    color=colours[i % len(colours)], capsize=2, label=label)
    ax.set_xlabel("held-out unsafe-action rate, prefill attack, safe decoding  <- safer")
    ax.set_ylabel("utility accuracy, train patients  -> more useful")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"Utility against safety ({_over_worlds(rows)})", fontsize=9)
    _legend_outside(ax)
    _save(plt, fig, png)


def _over_worlds(rows: list[dict]) -> str:
    seeds = max((r["n_seeds"] for r in rows), default=0)
    return f"mean of {seeds} worlds, 95% interval" if seeds > 1 else "one world: no interval"


def plot_probe_auroc(per_cell: dict[Cell, dict], png: Path) -> bool:
    """Mean linear-probe AUROC per layer for each recipe; False when no cell measured probes."""
    curves: dict[str, list[list[float]]] = {}
    for cell, values in per_cell.items():
        if values.get("probe AUROC per layer"):
            curves.setdefault(cell.recipe + (f" @{cell.start:g}" if cell.start else ""), []).append(
                values["probe AUROC per layer"])
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=120)
    for i, (label, runs) in enumerate(curves.items()):
        mean = [sum(layer) / len(layer) for layer in zip(*runs)]
        ax.plot(range(len(mean)), mean, marker=MARKERS[i % len(MARKERS)], label=label)
    words = [v["probe AUROC, bag of words"] for v in per_cell.values()
             if not math.isnan(v.get("probe AUROC, bag of words", math.nan))]
    if words:  # above this line a probe reads more than the prompts' words
        ax.axhline(sum(words) / len(words), color="grey", linestyle="--", label="words alone (bag of words)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("probe AUROC, safe vs unsafe prompts")
    ax.set_ylim(0.4, 1.02)
    ax.set_title("Linear probes per layer (mean over worlds)", fontsize=9)
    _legend_outside(ax)
    _save(plt, fig, png)
    return True


def write_plots_and_html(out: Path, rows: list[dict], per_cell: dict[Cell, dict], n_seeds: int,
                         paired: Sequence[dict] = (), reference: str = "", attack: str = "benign",
                         asks_request: bool = True, training_seed: int | None = None) -> None:
    import html

    from safepretrain.experiment.aggregate import (MAIN_COLUMNS, headline_columns, paired_note, paired_table,
                                                   summary_table, table_note, terminal_note, terminal_tables)
    from safepretrain.htmlpage import image, page, table
    from safepretrain.io import atomic_open

    plot_unsafe_rates(rows, out / "unsafe_rates.png", attack)
    plot_utility_vs_safety(rows, out / "utility_vs_safety.png")
    probes = plot_probe_auroc(per_cell, out / "probe_auroc.png")
    note = html.escape(table_note(n_seeds, attack, asks_request, training_seed))
    # first what the terminal printed, then every headline column
    tables = terminal_tables(rows, list(paired))
    digest = "".join(f"<h2>{html.escape(title[0].upper() + title[1:])}</h2>" + table(head, cells)
                     for title, head, cells in tables)
    digest += f"<p>{html.escape(terminal_note(tables, n_seeds, attack, reference))}</p>"
    body = (digest + "<h2>Every headline column</h2>"
            + table(*summary_table(rows, headline_columns(attack, MAIN_COLUMNS))) + f"<p>{note}</p>"
            + (f"<h2>Against {html.escape(reference)}, world by world: every column</h2>"
               + table(*paired_table(paired))
               + f"<p>{html.escape(paired_note(reference))}</p>" if paired else "")
            + "<h2>Held-out unsafe actions</h2>" + image(out / "unsafe_rates.png")
            + "<h2>Utility vs safety</h2>" + image(out / "utility_vs_safety.png")
            + ("<h2>Linear probes</h2>" + image(out / "probe_auroc.png") if probes else "")
            + "<p>Per-seed values: results.csv; per-sample answers: cells/*/*/*/eval-*/samples.jsonl.</p>")
    with atomic_open(out / "report.html") as f:
        f.write(page("MedSafetyWorld experiment", body))
