"""``safepretrain intervene``: run a recipe of data interventions over a corpus, locally or on a cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safepretrain.errors import UserError

console = Console()


def build_scorer(name: str, world: Path | None):
    if name == "oracle":
        if world is None:
            raise UserError("--scorer oracle needs --world DIR (the MedSafetyWorld whose oracle labels the text)")
        from safepretrain.pipeline.scorers.oracle import OracleScorer

        return OracleScorer(world)
    if name == "lexicon":
        from safepretrain.pipeline.scorers.lexicon import LexiconScorer

        return LexiconScorer()
    raise UserError(f"unknown scorer {name!r}; choose oracle or lexicon")


def intervene(
    corpus: Path = typer.Argument(..., help="A JSONL/Parquet file or a folder of shards ({'text': ...} records)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one shard per task, plus _pipeline/ (logs, stats)."),
    recipe: str = typer.Option("raw", help="raw, filter, rephrase, refusal, moral, safety-pretraining, tags, reflect."),
    scorer: str = typer.Option("oracle", help="oracle (MedSafetyWorld ground truth) or lexicon."),
    world: Path | None = typer.Option(None, "--world", help="MedSafetyWorld folder (oracle scorer, exact rewriter)."),
    threshold: int = typer.Option(1, help="Scores at or above this are unsafe."),
    rephrase_max: int = typer.Option(3, help="Rephrase scores threshold..this (use 5 for MedSafetyWorld)."),
    refusal_min: int = typer.Option(4, help="Scores at or above this become refusal / moral-education data."),
    tag_p: float = typer.Option(0.05, help="Harmfulness tag probability per word (tags recipe)."),
    reflection_format: str = typer.Option("special", help="Reflection format: special (toolkit tokens) or plain."),
    segment_words: int = typer.Option(100, help="Maximum words per SRP segment."),
    seed: int = typer.Option(0, help="Seed for tags and role names (per document, so sharding does not matter)."),
    executor: str = typer.Option("local", help="local, ray or slurm (datatrove executors)."),
    tasks: int = typer.Option(1, help="Output shards; each task resumes independently."),
    workers: int = typer.Option(1, help="Tasks run at once."),
    on_error: str = typer.Option("raise", help="Bad input records: raise (stop, naming file and line) or skip."),
    compression: str | None = typer.Option(None, help="Output compression: gzip or zstd (default none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous job in --out."),
) -> None:
    """Score a corpus and apply a recipe of the seed papers' interventions; re-run to resume."""
    from safepretrain.pipeline.documents import reader, writer
    from safepretrain.pipeline.recipes import RecipeConfig, build_steps
    from safepretrain.pipeline.run import ExecutionConfig, run_pipeline, step_table

    if on_error not in ("raise", "skip"):
        raise UserError("--on-error must be raise or skip")
    if compression not in (None, "gzip", "zstd"):
        raise UserError("--compression must be gzip or zstd")
    if reflection_format not in ("special", "plain"):
        raise UserError("--reflection-format must be special or plain")
    config = RecipeConfig(threshold=threshold, rephrase_max=rephrase_max, refusal_min=refusal_min, tag_p=tag_p,
                          reflection_format=reflection_format, reflect_max_len=segment_words, seed=seed)
    score = build_scorer(scorer, world)
    backend = None
    if world is not None:
        from safepretrain.pipeline.world_backend import WorldBackend

        backend = WorldBackend(world)
    steps = build_steps(recipe, score, backend, config)
    job = {"corpus": str(corpus), "recipe": recipe, "scorer": scorer, "world": str(world) if world else None,
           "config": config.__dict__, "tasks": tasks, "on_error": on_error, "compression": compression}
    pipeline = [reader(corpus, on_error=on_error), *steps, writer(out, compression=compression)]
    with console.status(f"{recipe}: {tasks} task(s) on {workers} {executor} worker(s)"):
        stats = run_pipeline(pipeline, out, job, ExecutionConfig(executor=executor, tasks=tasks, workers=workers))
    table = Table(title=f"{recipe} -> {out}")
    table.add_column("step")
    table.add_column("stats")
    for name, totals in step_table(stats):
        table.add_row(name, ", ".join(f"{k} {v:,.0f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                      for k, v in totals.items() if k != "total"))
    console.print(table)

