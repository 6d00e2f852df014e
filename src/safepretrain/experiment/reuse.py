"""Reuse another experiment's finished stages: copy what was made the same way, build only the rest.

A post-training variant (recovery chats, another finetuning attack, another evaluation) compared on the *same*
pretrained models isolates what it changes, and skips the most expensive stage. Each piece is reused only where
every field it depends on agrees; the first stage that differs, and all after it, are built here. A change to one
recipe's pretraining data (SRP's ``reflection_dropout``, the tags' ``tag_p``) leaves the other recipes' pretrained
models reusable, a change to training (``pretrain_tokens``) the worlds, tokenizers and data. Copies, not links: each
experiment folder stays whole when the other is moved or deleted, and its manifests hash what it holds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.experiment.config import ExperimentConfig, differing_fields, saved_defaults, saved_form
from safepretrain.experiment.stages import (
    EVAL_DONE, MODEL_DONE, TOKENIZER_DONE, WORLD_DONE, Cell, Layout, token_counts,
)
from safepretrain.io import atomic_directory, atomic_open

WORLD_BEFORE_EVAL_ITEMS = ("world.n_benign_finetune", "world.n_harmful_finetune")
"""World fields that size splits the world writes after its corpus and SFT chats but before its evaluation items
(world/generate.py's order): splits never share a decision, so they move evaluation items too."""
WORLD_AFTER_PRETRAINING = (*WORLD_BEFORE_EVAL_ITEMS, "world.error_recovery_cause_share")
"""World fields that change only splits written after the corpus and SFT chats: never what the tokenizer or
pretraining reads (tests/world/test_generate.py checks it). The world is generated again; its pretrained models
stay reusable."""
POST_TRAINING = ("recovery_chats", "recovery_pretexts", "recovery_interleaved", "recovery_errors", "recovery_contrast",
                 "sft_epochs", "train_overrides.sft", *WORLD_AFTER_PRETRAINING)
FINETUNING = (*POST_TRAINING, "finetune_attack", "finetune_epochs", "train_overrides.finetune")
BASE_EVALUATION = ("eval_items", "eval_max_new_tokens", "reflect_every",  # text prompts: no answer to open
                   *WORLD_BEFORE_EVAL_ITEMS)
EVALUATION = (*BASE_EVALUATION, "reflect_on_request")
POST_EVALUATION = (*EVALUATION, "linear_probes")
"""The fields each later stage depends on (besides pretraining's): a stage is reused only where they agree."""

PRETRAINING_AGNOSTIC = frozenset({f.partition(".")[0] for f in FINETUNING + POST_EVALUATION
                                  if f not in WORLD_AFTER_PRETRAINING} | {
    "out", "seeds", "recipes", "curriculum_starts", "reuse_from", "threads", "workers", "until", "compare_to",
})  # train_overrides' "pretrain" entry and the world's fields are compared on their own; a cell's folders name
# its curriculum start
"""Fields that change nothing pretraining makes: every later stage's, and the grid's bookkeeping."""

PIECES = ("world", "tokenizer", "corpus", "pretrain")
"""The pieces pretraining makes, each built from the ones before it."""
REACH = {
    "vocab_size": "tokenizer",
    "reflection_dropout": "corpus:reflect", "tag_p": "corpus:tags",
    "model": "pretrain", "pretrain_tokens": "pretrain", "lr": "pretrain", "budget_counts_markup": "pretrain",
    "training_seed": "pretrain", "train_overrides.pretrain": "pretrain",
}
"""The first piece a pretraining field changes (``corpus:reflect``: only that recipe's data, and what reads it).
Every other field -- the world's, ``segment_words`` (which evaluation reads too), any field added later -- changes
the worlds: nothing is reused."""


def reuse_stages(cfg: ExperimentConfig, cells: list[Cell], theirs: dict) -> list[Path]:
    """Copy from ``cfg.reuse_from`` (whose saved config ``check_reuse`` returned: ``theirs``) every finished piece
    the grid needs, this folder lacks and the other experiment made as this one would; returns what was copied.
    Missing pieces are left to be built here."""
    mine, defaults = saved_form(cfg), saved_defaults()
    differing = pretraining_differences(theirs, mine)

    def agree(*fields: str) -> bool:
        return all(_value(theirs, f, defaults) == _value(mine, f, defaults) for f in fields)

    def same(piece: str, corpora: set[str] = frozenset()) -> bool:
        return not changes(differing, piece, corpora)

    # config-wide answers, the same for every cell
    post, finetuned, same_eval = agree(*POST_TRAINING), agree(*FINETUNING), agree(*EVALUATION)
    post_eval, finetuned_eval = post and agree(*POST_EVALUATION), finetuned and same_eval
    layout = Layout(cfg)
    wanted: dict[Path, str | None] = {}  # a piece -> the file it writes last (None: the piece is a file)
    for seed in cfg.seeds:
        wanted |= {layout.world(seed): WORLD_DONE} if same("world") and agree(*WORLD_AFTER_PRETRAINING) else {}
        wanted |= {layout.tokenizer(seed): TOKENIZER_DONE} if same("tokenizer") else {}
    for cell in cells:
        corpora = {cell.spec.corpus} | ({"filter"} if cell.effective_start > 0 else set())
        for corpus in corpora:
            if same("corpus", {corpus}):
                wanted |= {layout.corpus(cell.seed, corpus): None, token_counts(layout.corpus(cell.seed, corpus)): None}
        if not same("pretrain", corpora):
            continue  # pretrained here: every later stage of the cell is built here too
        wanted[layout.pretrain(cell)] = MODEL_DONE
        stages = [(post, layout.sft_data(cell.seed, cell.spec.sft), None), (post, layout.sft(cell), MODEL_DONE),
                  (post_eval, layout.cell(cell) / "eval-post", EVAL_DONE),
                  (finetuned, layout.finetune(cell), MODEL_DONE),
                  (finetuned_eval, layout.cell(cell) / "eval-finetuned", EVAL_DONE)]
        wanted |= {path: done for reused, path, done in stages if reused}
    # eval-text: the base model's evaluation
    skip = ("checkpoints",) + (() if agree(*BASE_EVALUATION) else ("eval-text",))
    return [dest for dest, done in wanted.items()
            if _copy_if_finished(Path(cfg.reuse_from) / dest.relative_to(layout.root), dest, done, skip)]


def changes(differing: list[str], piece: str, corpora: set[str] = frozenset()) -> list[str]:
    """The differing pretraining fields that change ``piece`` (one of ``PIECES``; a corpus or a pretrained model
    made from ``corpora``)."""
    def reaches(field: str) -> bool:
        stage, _, corpus = REACH.get(field, PIECES[0]).partition(":")
        return PIECES.index(stage) <= PIECES.index(piece) and (not corpus or corpus in corpora)
    return [f for f in differing if reaches(f)]


def pretraining_differences(theirs: dict, mine: dict) -> list[str]:
    """The fields that shape pretraining and differ between two saved configs."""
    defaults = saved_defaults()
    differing = differing_fields(_pretraining_world(theirs), _pretraining_world(mine), PRETRAINING_AGNOSTIC, defaults)
    return differing + [f for f in ("train_overrides.pretrain",)
                        if _value(theirs, f, defaults) != _value(mine, f, defaults)]


def _pretraining_world(config: dict) -> dict:
    """``config`` with its world's fields that pretraining does not depend on left out."""
    later = {f.partition(".")[2] for f in WORLD_AFTER_PRETRAINING}
    return config | {"world": {k: v for k, v in (config.get("world") or {}).items() if k not in later}}


def check_reuse(cfg: ExperimentConfig) -> dict:
    """The config of the experiment ``cfg.reuse_from`` names, once checked to share at least its worlds."""
    source = Path(cfg.reuse_from)
    saved = source / "experiment.json"
    if not saved.is_file():
        raise UserError(f"reuse_from: {source} is not an experiment folder (no experiment.json); give the `out` "
                        "of the experiment whose stages to reuse")
    if source.resolve() == Path(cfg.out).resolve():
        raise UserError(f"reuse_from: {source} is this experiment's own folder; name another experiment's")
    theirs, mine, defaults = json.loads(saved.read_text()), saved_form(cfg), saved_defaults()
    if blocking := changes(pretraining_differences(theirs, mine), "world"):
        listed = "; ".join(f"{k}: {_value(theirs, k, defaults)!r} there, {_value(mine, k, defaults)!r} here"
                           for k in blocking)
        raise UserError(f"reuse_from: {source} built its worlds with another config ({listed}); none of its stages "
                        "are this experiment's: make those fields agree or drop reuse_from")
    return theirs


def _value(config: dict, field: str, defaults: dict):
    """A saved config's field (``train_overrides.sft``: one stage's overrides), its default if saved before the
    field existed."""
    name, _, stage = field.partition(".")
    value = config.get(name, defaults.get(name))
    return (value or {}).get(stage, []) if stage else value


def _copy_if_finished(src: Path, dest: Path, done: str | None, skip: tuple[str, ...]) -> bool:
    """Copy a finished piece unless this folder has it already: a file, or a folder whose ``done`` file is written
    last. Written under a temporary name, so an interrupted copy is redone, never half-used."""
    if dest.exists():
        return False
    if done is None:
        if not src.is_file():
            return False
        with atomic_open(dest) as f, src.open(encoding="utf-8") as g:
            shutil.copyfileobj(g, f)
        return True
    if not (src / done).is_file():
        return False
    with atomic_directory(dest, overwrite=False) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=lambda _, names: [n for n in names if n in skip])
    return True
