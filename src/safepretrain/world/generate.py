"""``safepretrain world generate``: write a complete world folder, atomically and deterministically."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safepretrain.errors import UserError
from safepretrain.io import atomic_directory, read_jsonl, write_json, write_jsonl
from safepretrain.manifest import build_manifest
from safepretrain.world.config import WorldConfig
from safepretrain.world.corpus import CorpusBuilder
from safepretrain.world.entities import WorldSpec, build_world
from safepretrain.world.episodes import EpisodeSampler
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.oracle import Oracle
from safepretrain.world.schema import (
    REFLECTION_SPLIT, SPLITS, ChatExample, CorpusDocument, EvalItem, validator,
)
from safepretrain.world.splits import SplitBuilder

WORLD_FILE, CORPUS_FILE, SFT_FILE, BENIGN_FILE, HARMFUL_FILE, RECOVERY_FILE, MANIFEST_FILE = (
    "world.json", "corpus.jsonl", "sft.jsonl", "benign_finetune.jsonl", "harmful_finetune.jsonl", "recovery.jsonl",
    "manifest.json",
)
ERROR_RECOVERY_FILE = "error_recovery.jsonl"


def generate_world(config: WorldConfig, out: Path, overwrite: bool = False, progress=None) -> dict[str, Any]:
    """Generate every file of a world into ``out``; returns the manifest.

    The folder appears only when complete (built under a temporary name, then renamed).
    """
    world = build_world(config)
    oracle = Oracle(world)
    labeler = SegmentLabeler(oracle)
    corpus = CorpusBuilder(config, world, EpisodeSampler(world, oracle), labeler)
    with atomic_directory(out, overwrite) as tmp:
        write_json(tmp / WORLD_FILE, asdict(world))
        docs = list(corpus.documents(progress))
        write_jsonl(tmp / CORPUS_FILE, (asdict(d) for d in docs))
        splits = SplitBuilder(corpus, corpus.decision_keys)
        counts = {"corpus": _corpus_counts(docs)}
        counts["sft"] = write_jsonl(tmp / SFT_FILE, (asdict(x) for x in splits.sft()))
        counts["benign_finetune"] = write_jsonl(tmp / BENIGN_FILE, (asdict(x) for x in splits.benign_finetune()))
        counts["harmful_finetune"] = write_jsonl(tmp / HARMFUL_FILE, (asdict(x) for x in splits.harmful_finetune()))
        for split in SPLITS:
            counts[split] = write_jsonl(tmp / "eval" / f"{split}.jsonl", (asdict(x) for x in splits.eval_items(split)))
        counts[REFLECTION_SPLIT] = write_jsonl(
            tmp / "eval" / f"{REFLECTION_SPLIT}.jsonl", (asdict(x) for x in splits.reflection_documents()))
        counts["recovery"] = write_jsonl(tmp / RECOVERY_FILE, (asdict(x) for x in splits.recovery()))
        counts["error_recovery"] = write_jsonl(tmp / ERROR_RECOVERY_FILE, (asdict(x) for x in splits.error_recovery()))
        manifest = build_manifest("medsafetyworld", config.to_dict(), tmp, preset=config.preset, seed=config.seed,
                                  counts=counts, heldout_types=list(config.heldout_types))
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


def _corpus_counts(docs: list[CorpusDocument]) -> dict[str, Any]:
    kinds = Counter(d.kind for d in docs)
    cells = Counter(f"{d.cell.goal}/{d.cell.mechanism}" for d in docs if d.cell is not None)
    types = Counter(t for d in docs for s in d.segments for t in s.types)
    words = sum(len(d.text.split()) for d in docs)
    return {"documents": len(docs), "words": words, "kinds": dict(sorted(kinds.items())),
            "cells": dict(sorted(cells.items())), "unsafe_segment_types": dict(sorted(types.items())),
            "unsafe_documents": sum(d.label == "unsafe" for d in docs)}


# ---------------------------------------------------------------- reading a world back


class WorldFolder:
    """A generated world on disk, validated on open: complete (manifest present), readable, known splits."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such world folder; create one with `safepretrain world generate`")
        manifest_path = self.root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise UserError(f"{self.root} has no {MANIFEST_FILE}: not a complete world (an interrupted generate?); "
                            "generate it again")
        self.manifest = _read_json(manifest_path)
        self.config = WorldConfig(**_tuples(self.manifest["config"]))
        self.spec: WorldSpec = validator(WorldSpec)(_read_json(self.root / WORLD_FILE))
        self.oracle = Oracle(self.spec)

    def corpus(self):
        return read_jsonl(self.root / CORPUS_FILE, validator(CorpusDocument))

    def chat(self, name: str):
        return read_jsonl(self.root / name, validator(ChatExample))

    def eval_items(self, split: str):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        return read_jsonl(self.root / "eval" / f"{split}.jsonl", validator(EvalItem))

    def reflection_documents(self):
        return read_jsonl(self.root / "eval" / f"{REFLECTION_SPLIT}.jsonl", validator(CorpusDocument))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the world folder is incomplete, generate it again") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _tuples(config: dict) -> dict:
    """JSON turns the config's tuples into lists; turn them back (nested pairs too)."""
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for k, v in config.items()}


