"""``safepretrain experiment``: run a recipe comparison grid (resumable) and aggregate it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Recipe x curriculum x seed experiments on MedSafetyWorld; SRP on SmolLM2.")
console = Console()
UNTIL_HELP = "Last stage: base (base models only: a quick pilot), post, attack (default)."
WORKERS_HELP = "Jobs at once (processes); default: the usable CPU cores over the threads per job."


@app.command("run")
def run(
    config: Path = typer.Argument(
        ..., help="YAML of ExperimentConfig fields (optionally 'preset: laptop|quick|tiny|paper')."),
    out: str | None = typer.Option(None, "--out", help="Experiment folder; rerun to resume."),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over when the folder holds another config."),
    until: str | None = typer.Option(None, "--until", help=UNTIL_HELP),
    reuse_from: str | None = typer.Option(
        None, "--reuse-from", help="Another experiment's folder (same pretraining config) whose finished stages to "
                                   "copy where they agree with this config, e.g. its pretrained models."),
) -> None:
    """Run the experiment a YAML file describes."""
    from safepretrain.experiment.config import load_experiment

    overrides = {"out": out, "workers": workers, "until": until, "reuse_from": reuse_from}
    _run(load_experiment(config, None, overrides), overwrite)


@app.command("medsafetyworld")
def medsafetyworld(
    preset: str = typer.Option(
        "laptop", "--preset", help="laptop (the demo, 3 worlds), quick (1 world), tiny (seconds), paper (GPU)."),
    out: str | None = typer.Option(None, "--out"),
    seeds: int | None = typer.Option(None, "--seeds", help="Number of seeds (0..n-1)."),
    recipes: list[str] = typer.Option([], "--recipe", help="Recipes to compare (repeatable; default: all)."),
    workers: int | None = typer.Option(None, "--workers", help=WORKERS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite"),
    until: str | None = typer.Option(None, "--until", help=UNTIL_HELP),
) -> None:
    """The built-in comparison: SRP against filtering, rewriting and Safety Pretraining's recipes."""
    from safepretrain.experiment.config import load_experiment

    overrides = {"out": out, "workers": workers, "seeds": tuple(range(seeds)) if seeds else None,
                 "recipes": tuple(recipes) or None, "until": until}
    _run(load_experiment(None, preset, overrides), overwrite)


@app.command("compare")
def compare(
    results: list[Path] = typer.Argument(
        ..., help="results.json of one or more experiments on the same worlds (e.g. a grid and its curriculum)."),
    to: str = typer.Option("filter", "--to", help="The reference recipe (its earliest curriculum start)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the table here (Markdown)."),
) -> None:
    """Each recipe against a reference, world by world: paired differences with 95% intervals."""
    from safepretrain.errors import UserError
    from safepretrain.experiment.aggregate import load_cells, paired_differences, paired_markdown
    from safepretrain.io import atomic_open

    paired = paired_differences(load_cells(results), to)
    if not paired:
        raise UserError(f"no cell of recipe {to!r} shares a world with another cell in {', '.join(map(str, results))}")
    table = paired_markdown(paired, to)
    console.print(table, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        with atomic_open(out) as f:
            f.write(table)


@app.command("status")
def status(
    folder: Path = typer.Argument(..., help="An experiment's folder (its --out), running, stopped or finished."),
) -> None:
    """How far an experiment is: each phase's finished jobs, and how far the begun ones got."""
    from rich.table import Table

    from safepretrain.experiment.run import grid, grid_summary
    from safepretrain.experiment.stages import Layout
    from safepretrain.experiment.config import load_saved
    from safepretrain.experiment.status import experiment_status

    cfg = load_saved(folder)
    console.print(grid_summary(cfg, grid(cfg), Layout(cfg)))
    table = Table("phase", "done", "begun, not finished")
    for phase in experiment_status(cfg):
        table.add_row(phase.phase, f"{phase.done}/{phase.total}", "\n".join(phase.started))
    console.print(table)
    results = folder / "results" / "results.md"
    console.print(f"results: {results}" if results.is_file() else
                  "results: written when every phase is done (`experiment run` or `medsafetyworld` again to continue)")


@app.command("export")
def export(
    folder: Path = typer.Argument(..., help="A finished experiment's folder (its --out)."),
    dest: Path = typer.Argument(..., help="Where to write the export (a new or empty folder)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty DEST."),
) -> None:
    """Its results, config and manifests without models or samples: a folder small enough to publish."""
    from safepretrain.experiment.export import export_results

    files = export_results(folder, dest, overwrite)
    console.print(f"{len(files)} files -> {dest} (results.md is the table)")


@app.command("real")
def real(
    config: Path | None = typer.Argument(None, help="Optional YAML of RealConfig fields."),
    model: str | None = typer.Option(None, "--model", help="The imported SmolLM2 folder (default runs/smollm2)."),
    out: str | None = typer.Option(None, "--out", help="Experiment folder (default runs/real-srp); rerun to resume."),
    recipes: list[str] = typer.Option([], "--recipe",
                                      help="original, refusal-sft, srp, tags (repeatable; default all)."),
    eval_items: int | None = typer.Option(None, "--eval-items", help="Prompts per suite, evenly spread (0 = all)."),
    threads: int | None = typer.Option(None, "--threads", help="Torch threads."),
) -> None:
    """SRP on a real model: SmolLM2-135M-Instruct, original vs refusal SFT vs SRP continued pretraining + SFT vs
    Safety Pretraining's tags + Safe Beam, on AdvBench, the over-refusal and the benign suites, before and after a
    benign finetuning attack."""
    from safepretrain.experiment.real import load_real, run_real

    cfg = load_real(config, {"model": model, "out": out, "recipes": tuple(recipes) or None,
                             "eval_items": eval_items, "threads": threads})
    results = run_real(cfg, console)
    console.print((results / "results.md").read_text(), markup=False, highlight=False)
    console.print(f"plot: {results}/real.png")


def _run(cfg, overwrite: bool) -> None:
    from safepretrain.experiment.run import run_experiment

    results = run_experiment(cfg, console, overwrite)
    print_results(results, cfg)


def print_results(results: Path, cfg) -> None:
    """The headline numbers as narrow tables; every column is in results.md, world by world in paired.md."""
    import json

    from rich import box
    from rich.table import Table

    from safepretrain.experiment.aggregate import terminal_note, terminal_tables

    found = json.loads((results / "results.json").read_text())
    tables = terminal_tables(found["rows"], found["paired"])
    for title, head, body in tables:
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                      collapse_padding=True)
        for column in head:
            table.add_column(column, overflow="fold")  # too narrow a terminal folds a cell, never cuts it
        for row in body:
            table.add_row(*row)
        console.print(table)
    console.print(terminal_note(tables, len(cfg.seeds), cfg.finetune_attack, cfg.compare_to), markup=False,
                  highlight=False)
    console.print(f"Every column, defined: {results}/results.md (world by world: paired.md); plots and report: "
                  f"{results}/report.html", markup=False, highlight=False)
