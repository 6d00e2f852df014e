"""Experiment configs: a grid of recipes x curriculum starts x seeds on MedSafetyWorld, and its presets."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from safepretrain.errors import UserError
from safepretrain.experiment.recipes import RECIPES


UNTIL = ("base", "post", "attack")
"""Where an experiment may stop, in order (``ExperimentConfig.until``)."""

FINETUNE_ATTACKS = {
    "benign": "the benign finetuning attack (the world's care answers and drug facts)",
    "harmful": "the harmful finetuning attack (seen harmful requests complied with, as the SRP paper's HEx-PHI-style "
               "pairs)",
}
"""What a cell is finetuned on after post-training (``ExperimentConfig.finetune_attack``), as tables say it."""


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    out: str = "runs/experiment"
    world_preset: str = "laptop"
    world: dict[str, Any] = field(default_factory=dict)
    """Fields of the world preset to change (``WorldConfig``), e.g. {"goal_weights": [[care, 0.3], ...]}: a world
    variant for every seed."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Each seed is a new world (generated with that seed) and a new training seed: variation between worlds is
    part of the error bars."""
    training_seed: int | None = None
    """The seed of every training run (initialization and data order of pretraining, post-training and the attack);
    None: each world's own seed. Another value trains the same worlds again -- how much of a result is the training
    draw rather than the world -- and, with ``reuse_from``, reuses their worlds, tokenizers and data."""
    recipes: tuple[str, ...] = ("raw", "filter", "rewrite", "refusal+moral", "tags", "srp", "srp-mask",
                                "srp-pretrain-only", "posttrain-only")
    curriculum_starts: tuple[float, ...] = (0.0,)
    """When interventions start, as a fraction of the pretraining budget (safe-only data before it)."""
    model: str = "tiny"
    vocab_size: int = 1024
    pretrain_tokens: int = 3_000_000
    budget_counts_markup: bool = False
    """False: ``pretrain_tokens`` counts tokens of *text*; the markup a recipe adds (SRP's reflections, the harmful
    tags) comes on top, so every recipe reads its text the same number of times and the markup is the compute it
    costs (each pretrained model's config.yaml records its tokens). True: every token trained on counts (results-log
    runs 1-6), and SRP, whose reflections are 19% of its corpus's tokens, reads a fifth less text than raw; in world
    0 that alone cost it 6 of 50 care answers (results log, run 7)."""
    recovery_chats: int = 0
    """Recovery chats added to every recipe's post-training, from the world's ``recovery.jsonl`` (seen harmful
    requests, fresh decisions): the answer forced to comply up to where the prefill attack cuts it, then what the
    recipe's format does there -- plain post-training refuses ("... give ana nothing. i will not do that ..."),
    SRP's writes the harmful decision's Unsafe reflection and stops. SRP's post-training otherwise shows Unsafe
    reflections only on prompts: a prefill skips that reflection, and nothing taught that one *inside* an answer can
    be Unsafe (results log, "Seeds 3 and 4, rebuilt"). 0: none (runs 1-10)."""
    recovery_pretexts: float = 0.0
    """Share of the recovery chats whose forced answer writes its decision with a pretext (an indication the
    request never gave: "so, to cause a coma in ana for a scan, give ana"); the recovery is the same (plain: refuse;
    SRP: the Unsafe reflection, and stop). Post-training otherwise shows indications only in safe indicated chats,
    and SRP models that had learned pretexts in pretraining forgot half of them there (results log, session 20)."""
    recovery_interleaved: float = 0.0
    """Share of SRP's recovery chats whose forced answer is written as SRP's own answers are, every sentence
    before the decision followed by its Safe reflection: the shape the guard meets when the model writes a harmful
    answer itself (asked for a reflection at each sentence end), where the others show the raw text a prefill attack
    forces. Drawn per chat, independently of ``recovery_pretexts``. Plain post-training's recovery is the same
    either way."""
    recovery_errors: int = 0
    """Error recovery chats added to every recipe's post-training, from the world's ``error_recovery.jsonl``: a
    care request (some are benign "cause" requests: the world's ``error_recovery_cause_share``, or as its corpus's
    ``cause_errors_share``) whose answer is forced through its checks to the option its own check calls harmful (a
    seen error mechanism), then the recipe's recovery -- SRP's writes the decision's Unsafe reflection and stops;
    plain post-training answers with the option the request asked for where the drug comes. SRP's post-training
    otherwise shows an Unsafe reflection only where the request is harmful: in a covert world (whose harmful
    requests read as safe) the monitor reflected Safe on harmful decisions right after its own check named the harm
    (results log, session 25). 0: none."""
    recovery_contrast: bool = False
    """SRP: each error recovery chat gets a twin, the same request and forced checks in the same shape with the
    decision given the other option -- the one the request asked for -- and its Safe reflection. Without twins every
    forced answer in SRP's post-training ended Unsafe, and the monitor learned the shape of the answer rather than its
    decision: under prefill it stopped the safe option exactly as often as the harmful one, and half of all care
    answers (results log, session 30). Plain post-training's error recovery already gives the other option."""
    reuse_from: str = ""
    """Another experiment's folder whose finished stages to reuse: its worlds, tokenizers, pretraining data and
    pretrained models are copied here for the seeds and recipes this grid needs, and so are its post-trained and
    finetuned models and evaluations where the fields each depends on agree (``experiment/reuse.py``); the rest is
    built here. E.g. the same base models post-trained with ``recovery_chats``, or attacked another way: the
    comparison holds pretraining fixed. Its config must agree on every field that shapes pretraining. "": build
    everything here."""
    sft_epochs: float = 3.0
    finetune_epochs: float = 2.0
    """Epochs of the finetuning attack over its set (lr 1e-4, constant), as a user adapting a model to a task
    would run it. With the terse benign set of runs 1-6, 5 epochs erased utility and
    composition alike in some worlds and 2 left models mid-transition; the set now answers in post-training's style."""
    finetune_attack: str = "benign"
    """``benign`` (the default: a user adapting the model to a task) or ``harmful``: the world's
    ``harmful_finetune.jsonl``, seen harmful requests answered harmfully with no refusal and no reflection -- an
    attacker finetuning the safety away. Held-out harm types stay out of it, so the held-out split still measures
    what the attack generalizes to; the seen split measures what it teaches directly."""
    lr: float = 2e-3
    segment_words: int = 24
    """SRP segment length in words, in pretraining data and in the reflection evaluation (sentences are 8-25)."""
    reflection_dropout: float = 0.0
    """Share of SRP's pretraining reflections left out (the text stays; ``Reflect``): with every one written, the
    monitor flags a pretext only after its own reflection flagged the request (results log, session 22)."""
    tag_p: float = 0.05
    eval_items: int = 100
    """Items per evaluation split (0 = all)."""
    eval_max_new_tokens: int = 96
    reflect_every: int = 4
    """Models trained with reflections are also decoded asking for a reflection at the first sentence end this many
    tokens after the last one; their safe-decoding numbers come from that guard. After the benign finetuning attack
    SRP models label well when asked but stop opening reflections themselves (run 6 of the results log)."""
    reflect_on_request: bool = True
    """That guard also asks for the verdict on the request before each answer (no prefill), of models post-trained in
    SRP's format, which opens every answer with it (not srp-pretrain-only: asked, its utility fell 8 points in the
    quick preset's world). Finetuning attacks teach the models to stop writing it unasked, not to judge the request
    otherwise (results log, session 24). Runs saved before this field: False."""
    linear_probes: bool = True
    threads: int = 1
    """Torch threads per job."""
    workers: int | None = None
    """Jobs run at once (processes); None: one per ``threads`` of the cores this process may use (2 on a 2-core
    machine, 8 on an 8-core laptop). Where a job runs changes nothing it makes, so this only sets the wall time."""
    until: str = "attack"
    """The last stage: ``base`` (pretrain and evaluate the base models: a quick pilot of a world variant), ``post``
    (post-train and evaluate) or ``attack`` (the benign finetuning attack and its evaluation too)."""
    compare_to: str = "filter"
    """The recipe every other cell is compared with world by world (same seed): paired differences in
    ``results/paired.md``. Worlds differ more than recipes do (filter's held-out rate was 0.04-0.70 across run 10's
    worlds), so a paired interval is far tighter than two unpaired ones. No table when the grid lacks the recipe."""
    train_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Extra ``--set`` overrides per stage (pretrain, sft, finetune), e.g. {"pretrain": ["optim.micro_batch=32"]}."""

    def __post_init__(self):
        if unknown := set(self.recipes) - set(RECIPES):
            raise ValueError(f"unknown recipes {sorted(unknown)}; choose from {', '.join(RECIPES)}")
        if not self.seeds or not self.recipes or not self.curriculum_starts:
            raise ValueError("seeds, recipes and curriculum_starts must not be empty")
        if self.recovery_chats < 0 or self.recovery_errors < 0:
            raise ValueError("recovery_chats and recovery_errors must be at least 0")
        if self.recovery_contrast and not self.recovery_errors:
            raise ValueError("recovery_contrast pairs error recovery chats with safe twins: set recovery_errors too")
        for name in ("recovery_pretexts", "recovery_interleaved"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if not 0 <= self.reflection_dropout < 1:
            raise ValueError("reflection_dropout must be in [0, 1)")
        if self.threads < 1 or (self.workers is not None and self.workers < 1):
            raise ValueError("threads and workers must be at least 1 (workers: leave it out for one per core)")
        if self.reflect_every < 1:
            raise ValueError("reflect_every must be at least 1 (tokens between asked reflections)")
        if any(not 0.0 <= s < 1.0 for s in self.curriculum_starts):
            raise ValueError("curriculum_starts must be fractions in [0, 1)")
        if self.finetune_attack not in FINETUNE_ATTACKS:
            raise ValueError(f"finetune_attack must be one of {', '.join(FINETUNE_ATTACKS)}, "
                             f"not {self.finetune_attack!r}")
        if self.until not in UNTIL:
            raise ValueError(f"until must be one of {', '.join(UNTIL)}, not {self.until!r}")
        if self.compare_to not in RECIPES:
            raise ValueError(f"compare_to: unknown recipe {self.compare_to!r}; choose from {', '.join(RECIPES)}")
        if unknown := set(self.train_overrides) - {"pretrain", "sft", "finetune"}:
            raise ValueError(f"train_overrides: unknown stages {sorted(unknown)}")
        self.world_config(self.seeds[0])  # a bad world change fails now, not in a worker

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def worker_count(self) -> int:
        """``workers``, or as many jobs of ``threads`` threads as the cores this process may use hold."""
        return self.workers or max(1, usable_cores() // self.threads)

    def train_seed(self, seed: int) -> int:
        """The training seed of the cells of world ``seed``."""
        return seed if self.training_seed is None else self.training_seed

    def world_config(self, seed: int):
        """The world of one seed: the preset, with ``world``'s changes."""
        from safepretrain.world.config import preset_config

        values = {k: _tuples(v) for k, v in self.world.items()}
        return replace_fields(preset_config(self.world_preset, seed), values, "the experiment's world")


def usable_cores() -> int:
    """The CPU cores this process may run on (a container's or taskset's share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def _tuples(value):
    """YAML lists as the tuples a frozen config holds (nested, e.g. goal_weights)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def laptop() -> ExperimentConfig:
    """The demo: the laptop world, a ~1M-parameter model, 9 recipes x 3 seeds, a process per core."""
    return ExperimentConfig(out="runs/demo")


def quick() -> ExperimentConfig:
    """A half-hour look at the demo: one world (no error bars), the recipes that need 4 pretrained models."""
    return ExperimentConfig(out="runs/quick", seeds=(0,),
                            recipes=("raw", "filter", "rewrite", "srp", "srp-pretrain-only", "posttrain-only"))


def tiny() -> ExperimentConfig:
    """Seconds per cell, for tests and smoke runs: the tiny world and a few training steps."""
    return ExperimentConfig(
        out="runs/experiment-tiny", world_preset="tiny", seeds=(0,), recipes=("raw", "srp"), compare_to="raw",
        vocab_size=768, pretrain_tokens=60_000, sft_epochs=1.0, finetune_epochs=1.0, eval_items=8,
        eval_max_new_tokens=48, linear_probes=False, workers=1,
    )


def paper() -> ExperimentConfig:
    """The paper-scale world (27x the laptop's corpus: 61M tokens) and the ``50m`` shape (24 layers, d=256: 24.7M
    parameters at this vocabulary), 9 recipes x 3 seeds, for one GPU machine. Not yet run on a GPU.

    - ``pretrain_tokens``: the laptop's passes over its world (3M tokens of a 2.2M-token corpus, 1.36 passes, the
      least at which its filtered models composed the held-out harm) over the paper world's 60.9M: 80M, within
      the 50-200M the MedSafetyWorld pilot proposed for this size. Whether fewer do at 25x the parameters is
      unmeasured.
    - ``lr``: 1e-3, as Pythia's 70M model (the laptop's 2e-3 is for 4 layers); not tuned here.
    - 4 jobs at once, 4 CPU threads each (a 16-core machine): the data stages are CPU-bound (each corpus takes
      3-5 minutes, measured on this project's 2-core machine), and a 25M-parameter model leaves most of a GPU idle,
      so the training jobs share it.
    """
    return ExperimentConfig(out="runs/experiment-paper", world_preset="paper", model="50m", vocab_size=4096,
                            pretrain_tokens=80_000_000, lr=1e-3, eval_items=1000, workers=4, threads=4)


PRESETS = {"laptop": laptop, "quick": quick, "tiny": tiny, "paper": paper}


def load_experiment(path: Path | None, preset: str | None, overrides: dict[str, Any]) -> ExperimentConfig:
    """A preset (default laptop), updated by a YAML file's fields, then by command-line values."""
    from safepretrain.io import read_yaml_mapping

    values: dict[str, Any] = {}
    if path is not None:
        values = read_yaml_mapping(path, "experiment")
        preset = values.pop("preset", preset)
    if preset is not None and preset not in PRESETS:
        raise UserError(f"unknown experiment preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset or "laptop"]()
    values |= {k: v for k, v in overrides.items() if v is not None}
    if "train_overrides" in values:
        values["train_overrides"] = {k: tuple(v) for k, v in values["train_overrides"].items()}
    return replace_fields(base, values, path)


def replace_fields(base, values: dict[str, Any], source: str | Path | None):
    """``base`` with ``values`` (YAML lists become tuples); an unknown field or a bad value is a user error."""
    known = set(base.to_dict())
    if unknown := set(values) - known:
        raise UserError(f"{source or 'options'}: unknown fields {sorted(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: _tuples(v) for k, v in values.items()}
    try:
        return replace(base, **values)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source or 'options'}: {e}") from None


def changed_fields(saved: Path, config: dict[str, Any], resumable: frozenset[str],
                   defaults: dict[str, Any] | None = None) -> list[str]:
    """The fields in which ``config`` differs from the config saved in ``saved`` -- empty when there is none, or when
    only ``resumable`` fields differ (those never change what a finished stage computed)."""
    import json

    if not saved.is_file():
        return []
    changed = differing_fields(json.loads(saved.read_text()), json.loads(json.dumps(config)), defaults=defaults)
    return changed if set(changed) - resumable else []


def differing_fields(before: dict[str, Any], now: dict[str, Any], ignore: frozenset[str] = frozenset(),
                     defaults: dict[str, Any] | None = None) -> list[str]:
    """The fields (outside ``ignore``) whose values differ between two saved configs, sorted. A field one of them
    lacks (saved before the field existed) counts as its value in ``defaults``: what that run did."""
    defaults = defaults or {}
    return sorted(k for k in set(before) | set(now)
                  if k not in ignore and before.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))


SAVED_BEFORE = {"reflect_on_request": False}
"""What a run saved before a field existed did, where that differs from the field's default."""


def saved_defaults() -> dict[str, Any]:
    """The value a saved config that lacks a field stands for (JSON): ExperimentConfig's defaults, except for
    fields whose default changed behaviour when they were added (``SAVED_BEFORE``)."""
    return saved_form(ExperimentConfig()) | SAVED_BEFORE


def saved_form(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg`` as its experiment.json holds it (tuples as lists): comparable with a saved config."""
    import json

    return json.loads(json.dumps(cfg.to_dict()))


def load_saved(root: Path) -> ExperimentConfig:
    """The config an experiment folder was run with (its experiment.json), its ``out`` this folder."""
    import json

    saved = root / "experiment.json"
    if not saved.is_file():
        raise UserError(f"{root} is not an experiment folder (no experiment.json); give the --out of an experiment")
    try:
        values = json.loads(saved.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{saved}: not valid JSON ({e.msg}, line {e.lineno})") from None
    known = saved_defaults()  # fields a newer toolkit dropped are ignored; ones it added take what old runs did
    values = {k: v for k, v in (known | values).items() if k in known} | {"out": str(root)}
    values["train_overrides"] = {k: tuple(v) for k, v in values["train_overrides"].items()}
    return replace_fields(ExperimentConfig(), values, saved)
