"""What a training run leaves for people: the loss curve and the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from safepretrain.io import sha256_file, write_json
from safepretrain.manifest import build_manifest, hardware
from safepretrain.train.config import TrainConfig, to_dict


def plot_loss(metrics: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    few = len(records) < 30  # a short run's few points, or its one, must show as points, not a line of nothing
    ax.plot([r["tokens"] for r in records], [r["loss"] for r in records], color="#1f6feb", marker="o" if few else None)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats / target token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    dose = [r.get("intervention_dose", 0) for r in records]
    if any(dose):  # curriculum runs: where the intervened stream came in
        twin = ax.twinx()
        twin.plot([r["tokens"] for r in records], dose, color="#d29922", linestyle="--")
        twin.set_ylabel("intervention dose", color="#d29922")
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png)


def write_run_manifest(out: Path, cfg: TrainConfig, state, streams) -> None:
    from safepretrain.train.data import expand_paths

    data = {str(path): sha256_file(path) for path in expand_paths([*cfg.data.train, *cfg.data.intervened])}
    manifest = build_manifest(
        "train", to_dict(cfg), out / "model", seed=cfg.seed, data=data, hardware=hardware(),
        progress={"steps": state.step, "tokens": state.tokens, "intervened_tokens": state.intervened_tokens,
                  "stream_tokens": [int(len(s.tokens)) for s in streams]},
    )
    write_json(out / "manifest.json", manifest)
