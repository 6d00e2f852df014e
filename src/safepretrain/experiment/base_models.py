"""Start an experiment from another's base models: copy what pretraining made, check that it was made the same way.

A post-training variant (recovery chats, other SFT epochs, another evaluation) compared on the *same* pretrained
models isolates post-training's effect, and skips the most expensive stage. Copies, not links: each experiment
folder stays whole when the other is moved or deleted, and its cell manifests hash what it holds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.experiment.config import ExperimentConfig, differing_fields, saved_defaults
from safepretrain.experiment.stages import Cell, Layout, token_counts
from safepretrain.io import atomic_directory, atomic_open

PRETRAINING_AGNOSTIC = frozenset({
    "out", "seeds", "recipes", "base_models", "recovery_chats", "sft_epochs", "finetune_epochs", "eval_items",
    "eval_max_new_tokens", "reflect_every", "linear_probes", "threads", "workers", "until", "compare_to",
    "train_overrides",  # its "pretrain" entry is compared on its own
})
"""Fields that change nothing pretraining makes; every other field (and any field added later) must agree."""

BASE_EVAL_FIELDS = ("eval_items", "eval_max_new_tokens", "reflect_every")
"""Fields the base model's evaluation depends on: it is copied only where these agree too, else redone here."""


def adopt_base_models(cfg: ExperimentConfig, cells: list[Cell]) -> list[Path]:
    """Copy from ``cfg.base_models`` every finished world, tokenizer, pretraining corpus and pretrained model the
    grid needs and this folder lacks; returns what was copied. Missing pieces are left to be built here."""
    if not cfg.base_models:
        return []
    source = Path(cfg.base_models)
    theirs = check_base_models(cfg)
    same_eval = all(theirs.get(k, saved_defaults()[k]) == getattr(cfg, k) for k in BASE_EVAL_FIELDS)
    layout = Layout(cfg)
    wanted: dict[Path, str | None] = {}  # a piece -> the file written last in it (None: the piece is a file)
    for seed in cfg.seeds:
        wanted |= {layout.world(seed): "manifest.json", layout.tokenizer(seed): "tokenizer.json"}
    for cell in cells:
        for corpus in {cell.spec.corpus} | ({"filter"} if cell.effective_start > 0 else set()):
            wanted |= {layout.corpus(cell.seed, corpus): None, token_counts(layout.corpus(cell.seed, corpus)): None}
        wanted[layout.pretrain(cell)] = "model/config.json"
    skip = ("checkpoints",) + (() if same_eval else ("eval-text",))
    return [dest for dest, marker in wanted.items()
            if _copy_if_finished(source / dest.relative_to(layout.root), dest, marker, skip)]


def check_base_models(cfg: ExperimentConfig) -> dict:
    """The config of the experiment ``cfg.base_models`` names, once checked to pretrain as ``cfg`` does."""
    source = Path(cfg.base_models)
    saved = source / "experiment.json"
    if not saved.is_file():
        raise UserError(f"base_models: {source} is not an experiment folder (no experiment.json); give the `out` "
                        "of the experiment that pretrained the models")
    if source.resolve() == Path(cfg.out).resolve():
        raise UserError(f"base_models: {source} is this experiment's own folder; name another experiment's")
    theirs, mine = json.loads(saved.read_text()), json.loads(json.dumps(cfg.to_dict()))
    defaults = saved_defaults()
    differing = {k: (theirs.get(k, defaults.get(k)), mine.get(k)) for k in
                 differing_fields(theirs, mine, PRETRAINING_AGNOSTIC, defaults)}
    overrides = tuple((c.get("train_overrides") or {}).get("pretrain", []) for c in (theirs, mine))
    if overrides[0] != overrides[1]:
        differing["train_overrides.pretrain"] = overrides
    if differing:
        listed = "; ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in differing.items())
        raise UserError(f"base_models: {source} pretrained with another config ({listed}); its models are not "
                        "this experiment's base models: make those fields agree or drop base_models")
    return theirs


def _copy_if_finished(src: Path, dest: Path, marker: str | None, skip: tuple[str, ...]) -> bool:
    """Copy a finished piece unless this folder has it already: a file, or a folder whose ``marker`` is written
    last. Written under a temporary name, so an interrupted copy is redone, never half-used."""
    if dest.exists():
        return False
    if marker is None:
        if not src.is_file():
            return False
        with atomic_open(dest) as f, src.open(encoding="utf-8") as g:
            shutil.copyfileobj(g, f)
        return True
    if not (src / marker).is_file():
        return False
    with atomic_directory(dest, overwrite=False) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=lambda _, names: [n for n in names if n in skip])
    return True
