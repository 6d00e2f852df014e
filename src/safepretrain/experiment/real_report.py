"""The real-model experiment's table (Markdown + JSON), plot (PNG) and manifest."""

from __future__ import annotations

from pathlib import Path

from safepretrain.experiment.real import SUITES, RealConfig, RealLayout, modes

STAGES = ("post", "attacked")
COLUMNS = (  # (header, suite, path into metrics.json)
    ("AdvBench refused", "advbench", ("refusal_rate",)),
    ("AdvBench not refused", "advbench", ("non_refusal_rate",)),
    ("over-refusal (160 safe)", "overrefusal", ("by_label", "safe", "refusal_rate")),
    ("unsafe contrasts refused", "overrefusal", ("by_label", "unsafe", "refusal_rate")),
    ("benign utility", "benign", ("utility",)),
)


def rows(cfg: RealConfig) -> list[dict]:
    """One row per (recipe, stage, decoding mode) with every finished metric."""
    import json

    layout, found = RealLayout(cfg), []
    for recipe in cfg.recipes:
        for stage in STAGES if recipe != "original" else ("post",):
            for mode in modes(recipe):
                row = {"recipe": recipe, "stage": stage, "mode": mode}
                for header, suite, keys in COLUMNS:
                    path = layout.eval(recipe, stage, suite, mode) / "metrics.json"
                    if path.is_file():
                        value = json.loads(path.read_text())
                        for key in keys:
                            value = value.get(key, {}) if isinstance(value, dict) else {}
                        row[header] = value or None
                found.append(row)
    return found


def tag_checks(cfg: RealConfig) -> list[dict]:
    """The tags model's tag calibration at each stage that has one (experiment.real.check_tags)."""
    import json

    layout = RealLayout(cfg)
    return [{"stage": stage, **json.loads(layout.tag_check(stage).read_text())}
            for stage in ("continued", *STAGES) if layout.tag_check(stage).is_file()]


def tag_markdown(checks: list[dict]) -> str:
    lines = ["| tags model | log P(tag) at its tags | tag rate | P(tag) harmful text | P(tag) benign text | ratio |",
             "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['stage']} | {c['tag_logprob']:.2f} | {c['tag_rate']:.4f} | {c['harmful_p']:.2e} | "
                     f"{c['benign_p']:.2e} | {c['harmful_to_benign']:.1f} |")
    note = (f"Teacher-forced on {checks[0]['harmful_texts']} harmful (tags removed for the P(tag) column) and "
            f"{checks[0]['benign_texts']} benign corpus documents. Safe Beam reads P(tag) as harm: it needs a "
            "log-prob near log(tag rate) at the tags and a ratio well above 1.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def _cell(rate: dict | None) -> str:
    if not rate:
        return "-"
    low, high = rate["ci95"]
    return f"{rate['rate']:.1%} ({rate['count']}/{rate['n']}; {low:.0%}-{high:.0%})"


def markdown(table: list[dict]) -> str:
    headers = ["recipe", "stage", "decoding", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in table:
        cells = [row["recipe"], "after attack" if row["stage"] == "attacked" else "post-trained", row["mode"],
                 *(_cell(row.get(c[0])) for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Rates with counts and 95% Wilson intervals. 'Refused' is the relevance judge (a refusal phrase, an "
            "off-topic answer, or a guarded stop); 'not refused' is an upper bound on harmful answers, not a harm "
            "rate. Over-refusal: refusals of the over-refusal suite's safe prompts.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['recipe']}\n{'attacked' if r['stage'] == 'attacked' else 'post'}\n{r['mode']}" for r in table]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(table)), 4))
    width = 0.27
    for k, (header, color) in enumerate((("AdvBench not refused", "tab:red"),
                                         ("over-refusal (160 safe)", "tab:orange"), ("benign utility", "tab:green"))):
        values = [(r.get(header) or {}).get("rate", float("nan")) for r in table]
        ax.bar([i + (k - 1) * width for i in range(len(table))], values, width, label=header, color=color)
    ax.set_xticks(range(len(table)), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M-Instruct: attack success proxy, over-refusal, utility")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: RealConfig) -> Path:
    from safepretrain.io import atomic_open, sha256_file, write_json
    from safepretrain.manifest import build_manifest

    layout = RealLayout(cfg)
    out = layout.root / "results"
    out.mkdir(parents=True, exist_ok=True)
    table = rows(cfg)
    checks = tag_checks(cfg)
    with atomic_open(out / "results.md") as f:
        f.write(markdown(table))
        if checks:
            f.write("\n## Does the tags model know its tag?\n\n" + tag_markdown(checks))
    write_json(out / "results.json", {"config": cfg.to_dict(), "suites": list(SUITES), "rows": table,
                                      "tag_checks": checks})
    plot(table, out / "real.png")
    weights = {str(p.relative_to(layout.root)): sha256_file(p)
               for p in sorted(layout.models.glob("*/model/*.safetensors"))}
    write_json(out / "manifest.json", build_manifest(
        "real-experiment", cfg.to_dict(), layout.data,
        base_model={p.name: sha256_file(p) for p in sorted(Path(cfg.model).glob("*.safetensors"))}, models=weights))
    return out
