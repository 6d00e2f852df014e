"""Training configuration: frozen dataclasses whose defaults train a tiny model on a laptop.

A run is configured by a YAML file (sections mirror the dataclasses), dotted ``--set`` overrides, or both:

    kind: pretrain
    out: runs/pretrain
    model: {name: small, tokenizer: runs/tok}
    data: {train: [runs/world/corpus.jsonl]}
    optim: {lr: 2.0e-3, micro_batch: 16}
    curriculum: {start: 0.2}

Validation names the offending field (``optim.lr: Input should be greater than 0``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config

from safepretrain.errors import UserError

Kind = Literal["pretrain", "sft", "finetune"]
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(ge=1)]
STRICT = ConfigDict(extra="forbid")


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = "tiny"
    """A preset (tiny, small, 50m, 135m, 360m, 1.7b) trained from scratch, or a saved HF model folder to start from."""
    tokenizer: str | None = None
    """A saved HF tokenizer folder; defaults to the model folder when ``name`` is one."""
    reflection_format: Literal["plain", "special"] = "special"
    """How reflections are written in the data (see safepretrain.markup); used by the loss masks."""


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: tuple[str, ...] = ()
    """JSONL files of the main stream: documents ({"text": ...}) or chats ({"messages": [...]})."""
    intervened: tuple[str, ...] = ()
    """JSONL files of the intervened stream, mixed in once the curriculum starts (pretraining)."""
    text_field: str = "text"


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """When safety interventions start (Sam et al. 2026): before ``start`` x the token budget only the main (safe-only)
    stream is read; after it, each block comes from the intervened stream with probability ``mix``."""

    start: Fraction = 0.0
    mix: Fraction = 1.0


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class MaskingConfig:
    tokens: tuple[str, ...] = ()
    """Token strings excluded from the loss as targets (e.g. reflection tokens for an ablation). Off by default: SRP
    trains on its reflections."""
    after_unsafe: bool = False
    """Exclude the text that follows an Unsafe reflection, up to the next reflection (against a learned "harm mode")."""
    train_on_prompt: bool = False
    """Chat data: also train on the prompt tokens (by default only responses are targets)."""


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: Positive = 2e-3
    min_lr_ratio: Fraction = 0.1
    warmup: Fraction = 0.05
    """Warmup-stable-decay: fraction of steps of linear warmup..."""
    decay: Fraction = 0.2
    """...and of the final linear decay to ``min_lr_ratio`` x lr."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    grad_clip: Annotated[float, Field(ge=0)] = 1.0
    seq_len: PositiveInt = 256
    micro_batch: PositiveInt = 16
    grad_accum: PositiveInt = 1
    new_tokens: tuple[str, ...] = ()
    """Tokens added to a pretrained vocabulary (e.g. Safety Pretraining's harmful tag) whose embedding rows train at
    ``new_token_lr``. Adam moves a weight by about lr per step, so at a continued-pretraining lr a fresh row stays
    where it was drawn: SmolLM2's new tag kept log-prob -17.8 at its own tags after 51 steps at 5e-5."""
    new_token_lr: Positive = 1e-2


@with_config(STRICT)
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    kind: Kind = "pretrain"
    out: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: PositiveInt | None = None
    """Optimizer steps; else from ``max_tokens``; else ``epochs`` over the main stream."""
    max_tokens: PositiveInt | None = None
    epochs: Positive = 1.0
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on a GPU that supports it, fp32 otherwise."""
    threads: PositiveInt | None = None
    """CPU threads per process (default: torch's choice)."""
    checkpoint_every: PositiveInt = 200
    keep_checkpoints: PositiveInt = 2
    log_every: PositiveInt = 10


# Each kind's defaults differ from the pretraining ones only where the stage calls for it.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {},
    "sft": {"optim": {"lr": 5e-4, "warmup": 0.03, "decay": 0.3, "weight_decay": 0.0}, "epochs": 3.0},
    "finetune": {"optim": {"lr": 1e-4, "warmup": 0.0, "decay": 0.0, "weight_decay": 0.0, "min_lr_ratio": 1.0},
                 "max_steps": 200},
}

_ADAPTER = TypeAdapter(TrainConfig)


def build_config(kind: str, file_values: dict[str, Any] | None = None, overrides: list[str] | None = None,
                 source: str = "config") -> TrainConfig:
    """Layer: the kind's defaults < the YAML file < ``key.sub=value`` overrides; validate the result."""
    values = _merge(KIND_DEFAULTS.get(kind, {}), {"kind": kind})
    values = _merge(values, file_values or {})
    for item in overrides or []:
        values = _merge(values, parse_override(item))
    if values.get("kind") != kind:
        raise UserError(f"{source}: kind is {values.get('kind')!r} but this command trains {kind!r}")
    try:
        return _ADAPTER.validate_python(values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{source}: field {where!r}: {first['msg']}") from None


def load_yaml(path: Path) -> dict[str, Any]:
    from safepretrain.io import read_yaml_mapping

    return read_yaml_mapping(path, "config")


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return _ADAPTER.dump_python(config, mode="json")


def completed(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the fields added to TrainConfig since it was written at their defaults (as is, if it no
    longer validates), so resuming a run compares like with like."""
    try:
        return to_dict(_ADAPTER.validate_python(saved))
    except ValidationError:
        return saved


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(item: str) -> dict[str, Any]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UserError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-3")
    value = yaml.safe_load(raw) if raw else None
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def field_names(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key, for help texts and error hints."""
    names = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            names += field_names(f.default_factory, f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names
