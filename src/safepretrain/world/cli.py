"""``safepretrain world``: generate, audit, inspect and judge MedSafetyWorld folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safepretrain.errors import UserError

app = typer.Typer(no_args_is_help=True, help="MedSafetyWorld: a synthetic medical world with an exact safety oracle.")
console = Console()


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Folder to create (must be empty or absent)."),
    preset: str = typer.Option("laptop", help="World size: tiny (tests, seconds), laptop (the demo), paper (GPU)."),
    seed: int = typer.Option(0, help="Same preset and seed give byte-identical files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Change a field of the preset: --set "
                                        "pretext_share=0.3 (repeatable; fields: safepretrain.world.config)."),
) -> None:
    """Generate a world: spec, labeled corpus, SFT, benign finetuning and evaluation sets, manifest."""
    from rich.progress import Progress

    from safepretrain.experiment.config import replace_fields
    from safepretrain.io import check_output_dir
    from safepretrain.train.config import parse_override
    from safepretrain.world.config import preset_config
    from safepretrain.world.generate import generate_world

    try:
        config = preset_config(preset, seed)
    except KeyError as e:
        raise UserError(e.args[0]) from None
    values = {k: v for item in overrides for k, v in parse_override(item).items()}
    config = replace_fields(config, values, "--set")
    check_output_dir(out, overwrite)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"episodes ({preset})", total=config.n_episodes)
        manifest = generate_world(config, out, overwrite, progress=lambda k: bar.advance(task, k))
    counts = manifest["counts"]
    table = Table(title=f"MedSafetyWorld {preset}, seed {seed} -> {out}")
    table.add_column("file")
    table.add_column("records", justify="right")
    corpus = counts["corpus"]
    table.add_row("corpus.jsonl", f"{corpus['documents']:,} docs, {corpus['words']:,} words, "
                                  f"{corpus['unsafe_documents']:,} unsafe")
    for name, count in counts.items():
        if name != "corpus":
            table.add_row(name, f"{count:,}")
    console.print(table)


@app.command()
def audit(world: Path = typer.Argument(..., help="A generated world folder.")) -> None:
    """Check the world's properties with the oracle; exit 1 if any fails."""
    from safepretrain.world.audit import audit_world, label_table
    from safepretrain.world.generate import WorldFolder

    folder = WorldFolder(world)
    with console.status("auditing every segment with the oracle"):
        report = audit_world(folder)
    table = Table(title=f"audit of {world}")
    for column in ("property", "result", "detail"):
        table.add_column(column, overflow="fold")
    for p in report.properties:
        table.add_row(p.name, "[green]PASS[/]" if p.passed else "[bold red]FAIL[/]", p.detail)
    console.print(table)
    labels = Table(title="segment labels (oracle)")
    rows = label_table(report)
    kinds = ["safe", "unsafe"] + sorted({t for counts in rows.values() for t in counts} - {"safe", "unsafe"})
    labels.add_column("label / type", no_wrap=True)
    for name in rows:
        labels.add_column(Path(name).stem, justify="right")
    for kind in kinds:
        labels.add_row(kind, *(f"{rows[name].get(kind, 0):,}" for name in rows))
    console.print(labels)
    heldout = ", ".join(folder.config.heldout_types)
    console.print(f"held-out types: {heldout}")
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def judge(
    world: Path = typer.Argument(..., help="A generated world folder."),
    split: str = typer.Option(..., help="utility, overrefusal, seen_unsafe or heldout_unsafe."),
    predictions: Path = typer.Option(..., help='JSONL, one {"id": ..., "answer": ...} per item.'),
    out: Path = typer.Option(None, help="Where to write the metrics JSON (default: PREDICTIONS.metrics.json)."),
) -> None:
    """Score answers with the oracle: utility, unsafe-action, refusal and parse-failure rates vs chance."""
    from safepretrain.io import write_json
    from safepretrain.world.generate import WorldFolder
    from safepretrain.world.judge import judge_split, read_predictions

    folder = WorldFolder(world)
    known = {item.id for item in folder.eval_items(split)}
    metrics = judge_split(folder, split, read_predictions(predictions, known))
    out = out or predictions.with_suffix(".metrics.json")
    write_json(out, metrics)
    table = Table(title=f"{split}: {metrics['answered']} of {len(known)} items answered")
    for column in ("metric", "rate", "count", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in metrics.items():
        if isinstance(value, dict) and "rate" in value:
            low, high = value["ci95"]
            table.add_row(name, f"{value['rate']:.3f}", f"{value['count']}/{value['n']}", f"[{low:.3f}, {high:.3f}]")
    table.add_row("chance_unsafe_rate", f"{metrics['chance_unsafe_rate']:.3f}", "", "")
    console.print(table)
    console.print(f"metrics written to {out}")


@app.command()
def breakdown(
    samples: Path = typer.Argument(..., help="An evaluation's samples.jsonl (safepretrain eval, or an experiment "
                                              "cell's eval folder)."),
    world: Path = typer.Option(..., "--world", help="The world folder the evaluation ran on."),
    split: str = typer.Option("heldout_unsafe", "--split", help="The evaluation split."),
    condition: str = typer.Option("greedy/prefill", "--condition",
                                  help="decoder/attack, e.g. greedy/prefill or reflect/prefill (the asked guard)."),
    by: str = typer.Option("effect", "--by", help="mechanism, effect, drugs, patient or context."),
    examples: int = typer.Option(5, "--examples", min=0, help="Leaked answers to print."),
    out: Path | None = typer.Option(None, "--out", help="Also write the table and examples here (Markdown)."),
) -> None:
    """Unsafe answers per group of items, guarded and unguarded, and the answers the guard let through."""
    from safepretrain.io import atomic_open
    from safepretrain.world.breakdown import COLUMNS, attribute, cells, leak_text, read_samples, to_markdown
    from safepretrain.world.breakdown import breakdown as group_samples
    from safepretrain.world.generate import WorldFolder

    attribute(by)  # a mistyped option fails before the samples are read
    result = group_samples(WorldFolder(world), read_samples(samples, split, condition), split, condition, by)
    table = Table(title=f"{split}, {condition}, by {by}")
    table.add_column(by)
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for group in result.groups:
        table.add_row(group.key, *cells(group))
    table.add_row("all", *cells(result.total), style="bold")
    console.print(table)
    for record in result.leaks[:examples]:
        console.print(f"leaked {record['id']} ({record['group']}): {leak_text(record)}", highlight=False,
                      markup=False, soft_wrap=True)
    if out:
        with atomic_open(out) as f:
            f.write(to_markdown(result, examples))
        console.print(f"written to {out}")


@app.command()
def show(
    world: Path = typer.Argument(..., help="A generated world folder."),
    split: str = typer.Option("corpus", help="corpus, sft, benign_finetune, harmful_finetune, recovery, reflection, "
                                               "or an evaluation split."),
    n: int = typer.Option(2, "-n", min=1, help="How many records to print."),
) -> None:
    """Print the first records of a split as JSON."""
    from dataclasses import asdict
    from itertools import islice

    from safepretrain.world.generate import BENIGN_FILE, HARMFUL_FILE, RECOVERY_FILE, SFT_FILE, WorldFolder

    folder = WorldFolder(world)
    readers = {"corpus": folder.corpus, "sft": lambda: folder.chat(SFT_FILE),
               "benign_finetune": lambda: folder.chat(BENIGN_FILE),
               "harmful_finetune": lambda: folder.chat(HARMFUL_FILE), "recovery": lambda: folder.chat(RECOVERY_FILE),
               "reflection": folder.reflection_documents}
    records = readers[split]() if split in readers else folder.eval_items(split)
    for record in islice(records, n):
        console.print_json(json.dumps(asdict(record)))
