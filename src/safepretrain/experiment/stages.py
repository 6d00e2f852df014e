"""The stages of an experiment, each a resumable job with a fixed output path.

A stage whose output exists is never recomputed; a training stage interrupted mid-way resumes from its checkpoint;
an evaluation resumes per sample. Stages shared by several cells (the world of a seed, the raw pretraining that
``raw`` and ``posttrain-only`` both start from) are computed once.

    out/worlds/seed0/                      the world (generated with seed 0)
    out/tokenizers/seed0/                  BPE on its corpus and SFT chats
    out/data/seed0/<corpus>.jsonl          pretraining data of each pipeline recipe; sft-<plain|srp>.jsonl
    out/models/seed0/pretrain-<key>-start<s>/, .../sft-.../, .../finetune-.../
    out/models/seed0/pretrain-.../eval-text/   the base model's evaluation (corpus-style prompts)
    out/cells/<recipe>/start<s>/seed0/     eval-post/ and eval-finetuned/ (samples.jsonl, metrics.json), manifest.json
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from safepretrain.errors import UserError
from safepretrain.experiment.config import ExperimentConfig
from safepretrain.experiment.recipes import RECIPES, Recipe
from safepretrain.io import atomic_open


@dataclass(frozen=True)
class Cell:
    recipe: str
    start: float
    seed: int

    @property
    def spec(self) -> Recipe:
        return RECIPES[self.recipe]

    @property
    def effective_start(self) -> float:
        """A recipe without a pretraining intervention has no curriculum: it is trained once, at start 0."""
        return self.start if self.spec.corpus != "raw" else 0.0

    @property
    def name(self) -> str:
        return f"{self.recipe}/start{self.start:g}/seed{self.seed}"

    @classmethod
    def from_name(cls, name: str) -> Cell:
        """The cell ``name`` names (``srp/start0.2/seed1``)."""
        recipe, start, seed = name.rsplit("/", 2)
        return cls(recipe, float(start.removeprefix("start")), int(seed.removeprefix("seed")))


class Layout:
    def __init__(self, cfg: ExperimentConfig):
        self.root = Path(cfg.out)

    def world(self, seed: int) -> Path:
        return self.root / "worlds" / f"seed{seed}"

    def tokenizer(self, seed: int) -> Path:
        return self.root / "tokenizers" / f"seed{seed}"

    def corpus(self, seed: int, corpus: str) -> Path:
        return self.root / "data" / f"seed{seed}" / f"{corpus}.jsonl"

    def sft_data(self, seed: int, kind: str) -> Path:
        return self.root / "data" / f"seed{seed}" / f"sft-{kind}.jsonl"

    def pretrain(self, cell: Cell) -> Path:
        return self.root / "models" / f"seed{cell.seed}" / f"pretrain-{cell.spec.pretrain_key}-start{cell.effective_start:g}"

    def sft(self, cell: Cell) -> Path:
        return self.pretrain(cell).with_name(self.pretrain(cell).name.replace("pretrain-", "sft-") + f"-{cell.spec.sft}")

    def finetune(self, cell: Cell) -> Path:
        return self.sft(cell).with_name(self.sft(cell).name.replace("sft-", "finetune-"))

    def cell(self, cell: Cell) -> Path:
        return self.root / "cells" / cell.recipe / f"start{cell.start:g}" / f"seed{cell.seed}"


WORLD_DONE, TOKENIZER_DONE = "manifest.json", "tokenizer.json"
MODEL_DONE, EVAL_DONE = "model/config.json", "metrics.json"
"""The file a world, a tokenizer, a training stage and an evaluation write last: a stage is finished when it exists
(resume, reuse, status)."""


def _threads(cfg: ExperimentConfig) -> None:
    """Per job (jobs run in spawned processes): torch threads, and the CLI's quiet logging."""
    import torch

    from safepretrain.logs import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(cfg.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


# ---------------------------------------------------------------- data


def make_world(cfg: ExperimentConfig, seed: int) -> Path:
    from safepretrain.world.generate import generate_world

    out = Layout(cfg).world(seed)
    if not (out / WORLD_DONE).is_file():
        generate_world(cfg.world_config(seed), out, overwrite=True)
    return out


def make_tokenizer(cfg: ExperimentConfig, seed: int) -> Path:
    from safepretrain.io import atomic_directory
    from safepretrain.train.tokenizer import corpus_texts, train_tokenizer

    layout = Layout(cfg)
    out, world = layout.tokenizer(seed), layout.world(seed)
    if not (out / TOKENIZER_DONE).is_file():
        tokenizer = train_tokenizer(corpus_texts([world / "corpus.jsonl", world / "sft.jsonl"]), cfg.vocab_size)
        with atomic_directory(out, overwrite=True) as tmp:
            tokenizer.save_pretrained(tmp)
    return out


def make_corpus(cfg: ExperimentConfig, seed: int, corpus: str) -> Path:
    """Pretraining data of one pipeline recipe, run in-process (the world's corpora are small)."""
    from safepretrain.pipeline.documents import reader
    from safepretrain.pipeline.recipes import RecipeConfig, build_steps
    from safepretrain.pipeline.scorers.oracle import OracleScorer
    from safepretrain.pipeline.world_backend import WorldBackend

    _threads(cfg)
    layout = Layout(cfg)
    out, world = layout.corpus(seed, corpus), layout.world(seed)
    if out.is_file():
        return out
    recipe_cfg = RecipeConfig(threshold=1, rephrase_max=5, refusal_min=1, tag_p=cfg.tag_p,
                              reflect_max_len=cfg.segment_words, reflect_dropout=cfg.reflection_dropout, seed=seed)
    steps = build_steps(corpus, OracleScorer(world), WorldBackend(world), recipe_cfg)
    docs = reader(world / "corpus.jsonl")()
    for step in steps:
        docs = step(docs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as f:
        for doc in docs:
            f.write(json.dumps({"text": doc.text}) + "\n")
    return out


def make_sft_data(cfg: ExperimentConfig, seed: int, kind: str) -> Path:
    """``plain``: the world's SFT chats; ``srp``: the same chats in SRP's post-training format; either with
    ``recovery_chats`` recovery chats added (``recovery_pretexts`` of them with a pretext)."""
    from safepretrain.io import read_jsonl
    from safepretrain.markup import SPECIAL
    from safepretrain.pipeline.srp_sft import SrpSftConfig, srp_chat
    from safepretrain.world.generate import ERROR_RECOVERY_FILE, RECOVERY_FILE, WorldFolder

    layout = Layout(cfg)
    source = layout.world(seed) / "sft.jsonl"
    out = sft_data_path(cfg, seed, kind)
    if not out.is_file():
        grammar = WorldFolder(layout.world(seed)).oracle.grammar if cfg.recovery_pretexts else None
        records = _recovery_records(layout.world(seed), RECOVERY_FILE, cfg.recovery_chats, "recovery_chats")
        recoveries = [recovery_chat(r, kind, grammar, _pretext(n, cfg.recovery_pretexts),
                                    interleaved=_interleaved(r, cfg.recovery_interleaved))
                      for n, r in enumerate(records)]
        errors = _recovery_records(layout.world(seed), ERROR_RECOVERY_FILE, cfg.recovery_errors, "recovery_errors")
        for record in errors:
            interleaved = _interleaved(record, cfg.recovery_interleaved)
            recoveries.append(recovery_chat(record, kind, interleaved=interleaved))
            if cfg.recovery_contrast and kind == "srp":
                recoveries.append(safe_twin_chat(record, interleaved))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out) as f:
            for record in read_jsonl(source):
                f.write(json.dumps(record if kind == "plain" else srp_chat(record, SPECIAL, SrpSftConfig(seed=seed)))
                        + "\n")
            for record in recoveries:
                f.write(json.dumps(record) + "\n")
    return out


def sft_data_path(cfg: ExperimentConfig, seed: int, kind: str) -> Path:
    """Where ``make_sft_data`` puts a kind's chats: the world's own file when plain chats get nothing added."""
    layout = Layout(cfg)
    if kind == "plain" and not cfg.recovery_chats and not cfg.recovery_errors:
        return layout.world(seed) / "sft.jsonl"
    return layout.sft_data(seed, kind)


def _recovery_records(world: Path, name: str, n: int, field: str) -> list[dict]:
    from safepretrain.io import read_jsonl

    if not n:
        return []
    if not (world / name).is_file():
        raise UserError(f"{world} has no {name} (generated before it existed): generate the world again (the same "
                        f"seed gives the same files, plus this one) or set {field}: 0")
    records = list(itertools.islice(read_jsonl(world / name), n))
    if len(records) < n:
        raise UserError(f"{field} is {n} but {world / name} holds {len(records)}; ask for at most that many (the "
                        "world's n_harmful_finetune sets it)")
    return records


def _interleaved(record: dict, share: float) -> bool:
    """Whether an SRP recovery chat is forced in SRP's own answer shape: drawn per chat (seeded by its id), so
    that it is independent of which chats have a pretext and with which indication."""
    import random

    return random.Random(f"interleaved:{record['id']}").random() < share


def _pretext(n: int, share: float) -> str | None:
    """The indication the ``n``-th recovery chat's decision writes as a pretext, spread evenly at ``share``; the
    indications take turns among the chats that get one (session 20's first runs drew it by ``n``, which at share
    0.5 gave every pretext the same indication, and the models learned that one only)."""
    from safepretrain.world.splits import spread_evenly
    from safepretrain.world.templates import INDICATIONS

    if not spread_evenly(n, share):
        return None
    return INDICATIONS[(math.floor((n + 1) * share) - 1) % len(INDICATIONS)]


def safe_twin_chat(record: dict, interleaved: bool) -> dict:
    """An error record's SRP recovery chat with the decision given the other option (the one the care request asked
    for) and its Safe reflection: the same request and forced checks, in the same shape, so only the decision tells
    the twins apart."""
    from safepretrain.markup import SAFE, SPECIAL

    request, answer = (m["content"] for m in record["messages"])
    twin = {**record, "messages": [{"role": "user", "content": request},
                                   {"role": "assistant", "content": _with_the_other_option(record, answer)}]}
    forced = recovery_chat(twin, "srp", interleaved=interleaved)["messages"][1]["prefill"]
    return {"id": f"{record['id']}-safe-twin",
            "messages": [{"role": "user", "content": request},
                         {"role": "assistant", "content": SPECIAL.reflected(forced, SAFE, ()), "prefill": forced}]}


def _with_the_other_option(record: dict, answer: str) -> str:
    """An error record's answer with its decision given the option it did not give (the one the request asked for)."""
    patient = record["cell"]["patient"]
    cut = answer.rindex(f"give {patient} ") + len(f"give {patient} ")
    given = answer[cut:].strip().rstrip(".")
    return f"{answer[:cut]}{next(o for o in record['cell']['options'] if o != given)}."


def recovery_chat(record: dict, kind: str, grammar=None, pretext: str | None = None, interleaved: bool = False) -> dict:
    """A seen harmful request whose answer is forced (the ``prefill``: context, not a target) to comply up to where
    the prefill attack cuts it, then the recipe's recovery: plain post-training refuses where the drug would come
    (for an error record -- a safe request answered carelessly -- it gives the other option there);
    SRP's takes the whole harmful decision as forced and writes its Unsafe reflection, then stops -- as its guard
    asks for a reflection after the decision the attacked model writes. With ``pretext`` (and the world's
    ``grammar``) the forced decision writes that indication, which the request never gave. ``interleaved`` (SRP):
    the forced answer is written as SRP's own answers are, each sentence before the decision followed by its Safe
    reflection -- the shape the guard meets when the model writes the answer itself -- rather than as the raw text
    a prefill attack forces."""
    from safepretrain.markup import END_OF_TEXT, SPECIAL, UNSAFE
    from safepretrain.world.corpus import add_pretext
    from safepretrain.world.language import split_sentences
    from safepretrain.world.splits import refusal_text

    request, answer = (m["content"] for m in record["messages"])
    if pretext is not None:
        answer = add_pretext(answer, grammar, pretext)  # the decision's types stay the request's harm
    patient = record["cell"]["patient"]
    if kind == "srp":
        types = next(s["types"] for s in record["response_segments"] if s["label"] != "safe")
        if interleaved:  # the checks are safe; the answer ends with its decision (a safe request: verdict first)
            forced = SPECIAL.own_answer(split_sentences(answer), verdict=record["prompt_label"] == "safe")
        else:
            forced = answer
        content = SPECIAL.reflected(forced, UNSAFE, types) + END_OF_TEXT
    else:
        forced = answer[:answer.rindex(f"give {patient}") + len(f"give {patient}")]
        if record["prompt_label"] == "safe":  # a safe request answered carelessly (an error): plain answers it right
            content = _with_the_other_option(record, answer)
        else:
            content = f"{forced} nothing. {refusal_text(patient)}"
    return {"id": record["id"], "messages": [{"role": "user", "content": request},
                                             {"role": "assistant", "content": content, "prefill": forced}]}


# ---------------------------------------------------------------- training


def train_stage(kind: str, out: Path, values: dict, overrides: tuple[str, ...], show_progress: bool = False) -> Path:
    """Train unless the model exists; continue from a checkpoint when one is there."""
    from safepretrain.train.config import build_config
    from safepretrain.train.trainer import has_checkpoint, train

    if not (out / MODEL_DONE).is_file():
        cfg = build_config(kind, {**values, "out": str(out)}, list(overrides), source=f"experiment {kind}")
        train(cfg, resume=has_checkpoint(out), overwrite=not has_checkpoint(out), show_progress=show_progress)
    _drop_training_state(out)
    return out / "model"


def _drop_training_state(out: Path) -> None:
    """An experiment never trains a finished stage further: its last checkpoint (weights, optimizer, RNG) and its
    token cache are dead weight (in the paper preset 283 and 295 MB of a pretraining folder's 0.68 GB: about 28 of the
    grid's 46 GB). Also on a resumed run, should a crash have come between the two."""
    from safepretrain.train.trainer import CHECKPOINTS, TOKEN_CACHE

    for name in (CHECKPOINTS, TOKEN_CACHE):
        shutil.rmtree(out / name, ignore_errors=True)


def pretrain(cfg: ExperimentConfig, cell: Cell) -> Path:
    _threads(cfg)
    layout = Layout(cfg)
    data = layout.corpus(cell.seed, cell.spec.corpus)
    budget, start = pretrain_budget(cfg, cell)
    values = {
        "model": {"name": cfg.model, "tokenizer": str(layout.tokenizer(cell.seed))},
        "data": {"train": [str(data)]}, "max_tokens": budget, "seed": cfg.train_seed(cell.seed),
        "threads": cfg.threads, "optim": {"lr": cfg.lr}, "masking": {"after_unsafe": cell.spec.mask_after_unsafe},
    }
    if start > 0:  # safe-only data first, the recipe's data from the start on
        values["data"] = {"train": [str(layout.corpus(cell.seed, "filter"))], "intervened": [str(data)]}
        values["curriculum"] = {"start": start}
    return train_stage("pretrain", layout.pretrain(cell), values, cfg.train_overrides.get("pretrain", ()))


def pretrain_budget(cfg: ExperimentConfig, cell: Cell) -> tuple[int, float]:
    """(tokens to train on, the curriculum's start as a share of them). Unless ``budget_counts_markup``, the budget
    counts text: the recipe's markup is added on top of the part of the run that reads the recipe's data."""
    start = cell.effective_start
    if cfg.budget_counts_markup or not cell.spec.marks_up:
        return cfg.pretrain_tokens, start
    markup = tokens_per_text_token(cfg, cell.seed, cell.spec.corpus)
    budget = round(cfg.pretrain_tokens * (start + (1 - start) * markup))
    return budget, start * cfg.pretrain_tokens / budget


def tokens_per_text_token(cfg: ExperimentConfig, seed: int, corpus: str) -> float:
    """Tokens of a recipe's corpus per token of its text without markup; counted once, kept beside the corpus."""
    from safepretrain.io import read_jsonl, write_json
    from safepretrain.markup import strip_markup
    from safepretrain.train.tokenizer import load_tokenizer

    layout = Layout(cfg)
    data = layout.corpus(seed, corpus)
    counts = token_counts(data)
    if not counts.is_file():
        tokenizer = load_tokenizer(layout.tokenizer(seed))
        total = text = 0
        docs = (r["text"] for r in read_jsonl(data))
        while batch := list(itertools.islice(docs, 1024)):  # streamed: a paper-scale corpus need not fit in memory
            total += sum(map(len, tokenizer(batch, add_special_tokens=False)["input_ids"]))
            text += sum(map(len, tokenizer([strip_markup(d) for d in batch], add_special_tokens=False)["input_ids"]))
        write_json(counts, {"tokens": total, "text_tokens": text})
    found = json.loads(counts.read_text())
    return found["tokens"] / max(found["text_tokens"], 1)


def token_counts(corpus: Path) -> Path:
    """Where a corpus's token counts are kept (beside it)."""
    return corpus.with_name(corpus.stem + ".tokens.json")


def post_train(cfg: ExperimentConfig, cell: Cell) -> Path:
    _threads(cfg)
    layout = Layout(cfg)
    values = {"model": {"name": str(layout.pretrain(cell) / "model")},
              "data": {"train": [str(make_sft_data(cfg, cell.seed, cell.spec.sft))]},
              "epochs": cfg.sft_epochs, "seed": cfg.train_seed(cell.seed), "threads": cfg.threads}
    return train_stage("sft", layout.sft(cell), values, cfg.train_overrides.get("sft", ()))


def finetune(cfg: ExperimentConfig, cell: Cell) -> Path:
    """The finetuning attack: benign (care answers and drug facts) or harmful (seen harmful requests complied
    with); no refusals, no reflections either way."""
    from safepretrain.world.generate import BENIGN_FILE, HARMFUL_FILE

    _threads(cfg)
    layout = Layout(cfg)
    data = layout.world(cell.seed) / {"benign": BENIGN_FILE, "harmful": HARMFUL_FILE}[cfg.finetune_attack]
    values = {"model": {"name": str(layout.sft(cell) / "model")}, "data": {"train": [str(data)]}, "max_steps": None,
              "epochs": cfg.finetune_epochs, "seed": cfg.train_seed(cell.seed), "threads": cfg.threads}
    return train_stage("finetune", layout.finetune(cell), values, cfg.train_overrides.get("finetune", ()))


# ---------------------------------------------------------------- evaluation


def evaluate(cfg: ExperimentConfig, cell: Cell, stage: str) -> Path:
    """``stage``: pretrained (the base model, corpus-style prompts), post (after post-training, chat prompts) or
    finetuned (after the benign finetuning attack)."""
    from safepretrain.decode.decoder import load_model
    from safepretrain.eval.medsafetyworld import evaluate_world
    from safepretrain.world.generate import WorldFolder

    _threads(cfg)
    out = eval_dir(cfg, cell, stage)
    layout = Layout(cfg)
    trained = {"pretrained": layout.pretrain, "post": layout.sft, "finetuned": layout.finetune}[stage](cell)
    evaluated = (out / EVAL_DONE).is_file()
    unchecked = cell.spec.safebeam and not (out / TAG_CHECK).is_file()
    if evaluated and not unchecked:
        return out
    model, tokenizer = load_model(trained / "model")
    if unchecked:
        check_tags(cfg, cell, model, tokenizer, trained / "model", out / TAG_CHECK)
    if evaluated:
        return out
    evaluate_world(model, tokenizer, WorldFolder(layout.world(cell.seed)), eval_config(cfg, cell, stage), out)
    return out


def eval_config(cfg: ExperimentConfig, cell: Cell, stage: str):
    """How a cell's model is evaluated at ``stage``: its decoders, its guard and its prompts."""
    from safepretrain.eval.medsafetyworld import WorldEvalConfig

    # the guard that asks for reflections, for models that learned them (a base model only from its corpus)
    reflects = cell.spec.pretrains_on_reflections if stage == "pretrained" else cell.spec.reflects
    decoders = ("greedy",) + (("safebeam", "beam") if cell.spec.safebeam else ()) + (("reflect",) if reflects else ())
    return WorldEvalConfig(decoders=decoders, reflect_every=cfg.reflect_every,
                           reflect_on_request=cfg.reflect_on_request and cell.spec.opens_answers_with_verdict,
                           prompt_format="text" if stage == "pretrained" else "chat",
                           max_items=cfg.eval_items, max_new_tokens=cfg.eval_max_new_tokens,
                           segment_words=cfg.segment_words, linear_probes=cfg.linear_probes and stage == "post")


TAG_CHECK = "tag-calibration.json"
TAG_CHECK_TEXTS = 200


def check_tags(cfg: ExperimentConfig, cell: Cell, model, tokenizer, model_dir: Path, out: Path) -> None:
    """Has the tags model learned its tag (eval.tags)? On its corpus's tagged documents and the filter corpus's
    (safe documents only), sampled as the corpora stream by."""
    from safepretrain.eval.tags import write_tag_check
    from safepretrain.io import read_jsonl
    from safepretrain.markup import HARMFUL_TAG

    layout = Layout(cfg)
    tagged = (d["text"] for d in read_jsonl(layout.corpus(cell.seed, cell.spec.corpus)) if HARMFUL_TAG in d["text"])
    safe = (d["text"] for d in read_jsonl(make_corpus(cfg, cell.seed, "filter")))
    write_tag_check(model, tokenizer, tagged, safe, out, TAG_CHECK_TEXTS, cell.seed, source=model_dir)


def eval_dir(cfg: ExperimentConfig, cell: Cell, stage: str) -> Path:
    """A base model is evaluated once, beside it: cells that share a pretraining share its evaluation."""
    layout = Layout(cfg)
    return layout.pretrain(cell) / "eval-text" if stage == "pretrained" else layout.cell(cell) / f"eval-{stage}"


def write_cell_manifest(cfg: ExperimentConfig, cell: Cell) -> Path:
    """What the cell was made of: config, seeds, versions, and the hashes of its data and models."""
    from safepretrain.io import sha256_file, write_json
    from safepretrain.manifest import package_versions

    layout = Layout(cfg)
    inputs = {
        "world_manifest": layout.world(cell.seed) / "manifest.json",
        "pretraining_data": layout.corpus(cell.seed, cell.spec.corpus),
        "sft_data": make_sft_data(cfg, cell.seed, cell.spec.sft),
        "pretrained_model": layout.pretrain(cell) / "model" / "model.safetensors",
        "sft_model": layout.sft(cell) / "model" / "model.safetensors",
        "finetuned_model": layout.finetune(cell) / "model" / "model.safetensors",
    }
    manifest = {
        "cell": {"recipe": cell.recipe, "curriculum_start": cell.start, "seed": cell.seed},
        "recipe": vars(cell.spec), "experiment": cfg.to_dict(), "versions": package_versions(),
        "paths": {k: str(v) for k, v in inputs.items()},
        "sha256": {k: sha256_file(v) for k, v in inputs.items() if v.is_file()},
        # where each model was trained (a reused one elsewhere, perhaps): its training manifest says
        "trained_on": {k: _trained_on(v.parent.parent) for k, v in inputs.items() if k.endswith("_model")},
    }
    path = layout.cell(cell) / "manifest.json"
    write_json(path, manifest)
    return path


def _trained_on(trained: Path) -> dict | None:
    """The hardware a training run's manifest records (None: not trained yet, or before manifests recorded it)."""
    manifest = trained / "manifest.json"
    return json.loads(manifest.read_text()).get("hardware") if manifest.is_file() else None
