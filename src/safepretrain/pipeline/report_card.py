"""The Data Safety Report Card (Safety Pretraining): what is in each component of a training mixture.

Per component (an input file or folder): the safety-score distribution on a seeded sample (stored scores are used
when present, else the given scorer scores the sample), hazard-phrase hits per million words in the 14 MLCommons
categories over the whole component, and the intervention stats a pipeline left in ``_pipeline/stats.json``.
Written as ``report.json``, two PNG charts and one self-contained ``index.html``.
"""

from __future__ import annotations

import html
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safepretrain.io import reservoir_sample
from safepretrain.pipeline.scorers.base import MAX_SCORE
from safepretrain.pipeline.scorers.lexicon import HAZARD_CATEGORIES, LexiconScorer


@dataclass
class ComponentCard:
    name: str
    documents: int = 0
    words: int = 0
    sample: int = 0
    score_key: str | None = None
    scores: dict[int, int] = field(default_factory=dict)
    hazard_hits: dict[str, int] = field(default_factory=dict)
    hazard_per_million_words: dict[str, float] = field(default_factory=dict)
    pipeline_stats: list = field(default_factory=list)


def component_card(path: Path, scorer=None, sample_size: int = 1000, seed: int = 0) -> ComponentCard:
    import json

    from safepretrain.pipeline.documents import reader
    from safepretrain.pipeline.run import LOGS, step_table

    card = ComponentCard(name=str(path))
    lexicon, hits = LexiconScorer(), Counter()

    def counted(docs):
        for doc in docs:
            card.documents += 1
            card.words += len(doc.text.split())
            hits.update(lexicon.hits(doc.text))
            yield doc

    sample = reservoir_sample(counted(reader(path)()), sample_size, random.Random(seed))
    card.sample = len(sample)
    card.score_key, levels = _sample_scores(sample, scorer)
    card.scores = {level: levels.count(level) for level in range(MAX_SCORE + 1)}
    card.hazard_hits = {c: hits.get(c, 0) for c in HAZARD_CATEGORIES}
    card.hazard_per_million_words = {c: 1e6 * n / max(card.words, 1) for c, n in card.hazard_hits.items()}
    stats = Path(path) / LOGS / "stats.json"
    if stats.is_file():
        card.pipeline_stats = [[name, totals] for name, totals in step_table(json.loads(stats.read_text()))]
    return card


def _sample_scores(sample, scorer) -> tuple[str | None, list[int]]:
    stored = sorted({k for d in sample for k in d.metadata if k.startswith("safety@") and not k.endswith(":before")})
    if stored and all(stored[0] in d.metadata for d in sample):
        return stored[0], [int(d.metadata[stored[0]]["score"]) for d in sample]
    if scorer is None:
        return None, []
    from safepretrain.pipeline.scorers.base import metadata_key

    return metadata_key(scorer), [s.score for s in scorer.score_batch([d.text for d in sample])]


def write_report_card(cards: list[ComponentCard], out: Path) -> None:
    from safepretrain.io import atomic_directory, write_json

    with atomic_directory(out, overwrite=True) as tmp:
        write_json(tmp / "report.json", {"components": [asdict(c) for c in cards]})
        _plot_scores(cards, tmp / "score_distribution.png")
        _plot_hazards(cards, tmp / "hazard_hits.png")
        (tmp / "index.html").write_text(_html(cards, tmp), encoding="utf-8")


def _plot_scores(cards: list[ComponentCard], png: Path) -> None:
    levels = range(MAX_SCORE + 1)
    shares = [[c.scores.get(s, 0) / max(sum(c.scores.values()), 1) for s in levels] for c in cards]
    _grouped_bars(cards, [str(s) for s in levels], shares, "safety score (0 safe .. 5 highly unsafe)",
                  "share of sampled documents", png)


def _plot_hazards(cards: list[ComponentCard], png: Path) -> None:
    categories = list(HAZARD_CATEGORIES)
    rates = [[c.hazard_per_million_words[k] for k in categories] for c in cards]
    _grouped_bars(cards, categories, rates, "MLCommons hazard category", "hazard-phrase hits per 1M words", png)


def _grouped_bars(cards: list[ComponentCard], groups: list[str], values: list[list[float]], xlabel: str,
                  ylabel: str, png: Path) -> None:
    """One bar per component in each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=120)
    width = 0.8 / max(len(cards), 1)
    for i, (card, row) in enumerate(zip(cards, values)):
        ax.bar([k + i * width for k in range(len(groups))], row, width, label=Path(card.name).name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(groups))], groups)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _html(cards: list[ComponentCard], folder: Path) -> str:
    from safepretrain.htmlpage import image, page, table

    summary = table(["component", "documents", "words", "sampled", "score key", *(f"score {s}" for s in range(6))],
                    [[c.name, f"{c.documents:,}", f"{c.words:,}", c.sample, c.score_key or "-",
                      *(c.scores.get(s, 0) for s in range(6))] for c in cards])
    hazards = table(["category", *(Path(c.name).name for c in cards)],
                    [[f"{k} {v}", *(f"{c.hazard_per_million_words[k]:.1f}" for c in cards)]
                     for k, v in HAZARD_CATEGORIES.items()])
    stats = "".join(f"<h3>{html.escape(c.name)}</h3>" + table(["step", "stats"], [
        [name, ", ".join(f"{k} {v}" for k, v in totals.items())] for name, totals in c.pipeline_stats])
        for c in cards if c.pipeline_stats)
    return page("Data Safety Report Card", f"""
<p>Scores: Safety Pretraining's 0-5 scale on a seeded sample per component. Hazard hits: phrase-list matches in the
14 MLCommons categories per million words of the whole component (a lexicon counts mentions, not intent).</p>
<h2>Components and score distribution</h2>{summary}{image(folder / "score_distribution.png")}
<h2>Hazard categories (hits per 1M words)</h2>{hazards}{image(folder / "hazard_hits.png")}
<h2>Intervention stats</h2>{stats or "<p>No pipeline stats in these components.</p>"}""")
