"""Run an experiment grid: stages in dependency order, jobs of a stage in parallel processes, everything resumable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from rich.console import Console

from safepretrain.errors import UserError
from safepretrain.experiment import stages
from safepretrain.experiment.config import ExperimentConfig, saved_form
from safepretrain.experiment.reuse import POST_EVALUATION, check_reuse, pretraining_differences, reuse_stages
from safepretrain.experiment.stages import Cell, Layout


def grid(cfg: ExperimentConfig) -> list[Cell]:
    return [Cell(r, s, seed) for seed in cfg.seeds for s in cfg.curriculum_starts for r in cfg.recipes]


def run_experiment(cfg: ExperimentConfig, console: Console | None = None, overwrite: bool = False) -> Path:
    """Run every cell (skipping what is done), then aggregate; returns the results folder."""
    from safepretrain.experiment.aggregate import aggregate

    console = console or Console()
    layout = Layout(cfg)
    # checked before this folder is claimed: a refused source leaves nothing behind
    source_config = check_reuse(cfg) if cfg.reuse_from else None
    _check_config(layout.root, cfg, overwrite)
    cells = grid(cfg)
    if source_config and (copied := reuse_stages(cfg, cells, source_config)):
        console.print(f"reused {len(copied)} finished pieces of {cfg.reuse_from}")
    if source_config and (differing := pretraining_differences(source_config, saved_form(cfg))):
        console.print(f"{cfg.reuse_from} pretrained another way ({', '.join(differing)}): what those fields change "
                      "is built here")
    phases = experiment_phases(cfg, cells)
    console.print(f"{grid_summary(cfg, cells, layout)}. Ctrl-C stops; the same command continues where it stopped.")
    started = time.perf_counter()
    for phase, jobs in phases:
        _run_phase(phase, jobs, cfg.workers, console)
    for cell in cells:
        stages.write_cell_manifest(cfg, cell)
    results = aggregate(cfg, cells)
    console.print(f"experiment: {len(cells)} cells in {time.perf_counter() - started:,.0f} s -> {results}")
    return results


Job = tuple[str, Callable, tuple]
"""(name, stage function, its arguments): one resumable piece of work."""


def experiment_phases(cfg: ExperimentConfig, cells: list[Cell]) -> list[tuple[str, list[Job]]]:
    """The grid's jobs, phase by phase in dependency order, up to ``cfg.until``."""
    layout = Layout(cfg)
    corpora = {c.spec.corpus for c in cells} | ({"filter"} if any(c.effective_start > 0 for c in cells) else set())
    phases = [
        ("world", [(f"seed{s}", stages.make_world, (cfg, s)) for s in cfg.seeds]),
        ("tokenizer", [(f"seed{s}", stages.make_tokenizer, (cfg, s)) for s in cfg.seeds]),
        ("data", [(f"{k} seed{s}", stages.make_corpus, (cfg, s, k)) for s in cfg.seeds for k in sorted(corpora)]
         + [(f"sft-{k} seed{s}", stages.make_sft_data, (cfg, s, k)) for s in cfg.seeds
            for k in sorted({c.spec.sft for c in cells})]),
        ("pretrain", _unique(cells, layout.pretrain, stages.pretrain, cfg)),
        ("eval base model", _unique(cells, layout.pretrain, stages.evaluate, cfg, "pretrained")),
        ("post-train", _unique(cells, layout.sft, stages.post_train, cfg)),
        ("eval", [(c.name, stages.evaluate, (cfg, c, "post")) for c in cells]),
        ("finetune attack", _unique(cells, layout.finetune, stages.finetune, cfg)),
        ("eval after attack", [(c.name, stages.evaluate, (cfg, c, "finetuned")) for c in cells]),
    ]
    last = {"base": "eval base model", "post": "eval", "attack": "eval after attack"}[cfg.until]
    return phases[:[name for name, _ in phases].index(last) + 1]


def grid_summary(cfg: ExperimentConfig, cells: list[Cell], layout: Layout) -> str:
    """What the grid builds and how much of its most expensive stage is done: a long run says so before it starts."""
    pretrainings = {layout.pretrain(c) for c in cells}
    pretrained = sum((p / stages.MODEL_DONE).is_file() for p in pretrainings)
    grid_size = " x ".join(_count(len(v), what) for v, what in
                           ((cfg.recipes, "recipe"), (cfg.curriculum_starts, "curriculum start"), (cfg.seeds, "seed")))
    return (f"{_count(len(cells), 'cell')} ({grid_size}), {_count(len(pretrainings), 'pretrained model')} "
            f"({pretrained} done), {_count(cfg.workers, 'process', 'processes')} -> {layout.root}")


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _unique(cells: list[Cell], path_of: Callable[[Cell], Path], job: Callable, cfg, *args) -> list[Job]:
    """One job per distinct output path (cells that share a model train it once)."""
    seen: dict[Path, Cell] = {}
    for cell in cells:
        seen.setdefault(path_of(cell), cell)
    return [(path.name + f" seed{cell.seed}", job, (cfg, cell, *args)) for path, cell in seen.items()]


# Fields a resumed experiment may change: every cell stands alone (more seeds or recipes extend the grid, fewer
# report a subset; a later ``until`` continues a pilot), and neither the number of processes, the folder's name
# (a moved or copied folder), the reference of the paired table, nor the experiment stages are reused from (they
# are checked to be made as this one makes them) changes any result.
RESUMABLE_CHANGES = frozenset({"out", "seeds", "recipes", "until", "workers", "compare_to", "reuse_from"})


def _check_config(root: Path, cfg: ExperimentConfig, overwrite: bool) -> None:
    """An experiment folder belongs to one config: resuming with a changed config would mix results."""
    import shutil

    from safepretrain.experiment.config import changed_fields, saved_defaults

    saved, now = root / "experiment.json", cfg.to_dict()
    if changed := changed_fields(saved, now, RESUMABLE_CHANGES, saved_defaults()):
        if not overwrite:
            hint = "choose another --out or pass --overwrite to start over"
            if set(changed) - RESUMABLE_CHANGES <= set(POST_EVALUATION):  # e.g. a newer guard's default
                hint = (f"only the evaluation changed: evaluate its models again, retraining nothing, with "
                        f"--out NEW --reuse-from {root} (`experiment run` of a YAML; `preset: laptop` for the demo), "
                        "or set the old values to resume here")
            raise UserError(f"{root} holds an experiment with another config (changed: {', '.join(changed)}); {hint}")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    from safepretrain.io import write_json

    write_json(saved, now)


def _run_phase(phase: str, jobs: list[Job], workers: int, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{phase:<18}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=len(jobs))
        if workers <= 1 or len(jobs) == 1:
            for name, job, args in jobs:
                bar.update(task, description=name)
                _call(name, job, args)
                bar.advance(task)
            bar.update(task, description="")
            return
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            for name, result in _in_flight(pool, jobs, workers):
                _call(name, result, ())
                bar.update(task, advance=1, description=f"done: {name}")
        bar.update(task, description="")


def _in_flight(pool, jobs: list[Job], limit: int):
    """(name, result getter) of each job as it finishes, with at most ``limit`` submitted at a time. An executor
    given every job at once hands queued ones to workers as soon as they free up: after a Ctrl-C, which each
    running stage answers by checkpointing and returning, the next jobs would start (seen in session 22)."""
    pending, running = iter(jobs), {}

    def submit_next() -> None:
        for name, job, args in pending:
            running[pool.submit(job, *args)] = name
            return

    for _ in range(limit):
        submit_next()
    try:
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield running.pop(future), future.result
                submit_next()
    except BaseException:
        for future in running:
            future.cancel()
        raise


def _die_with_parent() -> None:
    """A worker gets SIGTERM when the runner dies (killed, not only Ctrl-C): no orphan keeps training unseen.
    Its stage resumes from its last checkpoint on the next run."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _call(name: str, job: Callable, args: tuple):
    """Run ``job`` (or fetch a worker's result); a user error says which job it came from."""
    try:
        return job(*args)
    except UserError as e:
        raise UserError(f"{name}: {e}") from None

