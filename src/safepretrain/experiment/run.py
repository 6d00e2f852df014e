"""Run an experiment grid: each job as soon as the jobs it reads from are done, in parallel processes, resumable.

The grid is listed phase by phase (world, tokenizer, data, pretrain, ...), and a job is handed out once the jobs it
needs have finished -- earliest phase first -- not once its whole phase has: the base evaluation and post-training
of the first pretrained models fill the workers the last pretrainings leave idle. On a machine with several GPUs
each worker process sees one of them, taken in turn, so the jobs spread over all.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
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
    _run_jobs(phases, cfg.worker_count(), console)
    for cell in cells:
        stages.write_cell_manifest(cfg, cell)
    results = aggregate(cfg, cells)
    console.print(f"experiment: {len(cells)} cells in {time.perf_counter() - started:,.0f} s -> {results}")
    return results


@dataclass(frozen=True, eq=False)  # compared and hashed as itself: its config holds dicts
class Job:
    """One resumable piece of work: ``run(*args)`` makes ``makes`` (a path naming its output) from what the jobs
    that make ``needs`` made."""

    name: str
    run: Callable
    args: tuple
    makes: Path
    needs: tuple[Path, ...] = ()


def experiment_phases(cfg: ExperimentConfig, cells: list[Cell]) -> list[tuple[str, list[Job]]]:
    """The grid's jobs, phase by phase in dependency order, up to ``cfg.until``."""
    layout = Layout(cfg)
    corpora = sorted({c.spec.corpus for c in cells} | ({"filter"} if any(c.effective_start > 0 for c in cells)
                                                        else set()))
    sft_kinds = sorted({c.spec.sft for c in cells})

    def pretraining_inputs(cell: Cell) -> tuple[Path, ...]:
        # every corpus of the world: a curriculum reads filter's first, and the tags model is checked against it
        return layout.tokenizer(cell.seed), *(layout.corpus(cell.seed, k) for k in corpora)

    phases = [
        ("world", [Job(f"seed{s}", stages.make_world, (cfg, s), layout.world(s)) for s in cfg.seeds]),
        ("tokenizer", [Job(f"seed{s}", stages.make_tokenizer, (cfg, s), layout.tokenizer(s), (layout.world(s),))
                       for s in cfg.seeds]),
        ("data", [Job(f"{k} seed{s}", stages.make_corpus, (cfg, s, k), layout.corpus(s, k), (layout.world(s),))
                  for s in cfg.seeds for k in corpora]
         + [Job(f"sft-{k} seed{s}", stages.make_sft_data, (cfg, s, k), layout.sft_data(s, k), (layout.world(s),))
            for s in cfg.seeds for k in sft_kinds]),
        ("pretrain", _unique(cells, layout.pretrain, pretraining_inputs, stages.pretrain, cfg)),
        ("eval base model", _unique(cells, layout.pretrain, lambda c: (layout.pretrain(c),), stages.evaluate, cfg,
                                    "pretrained", makes=lambda c: stages.eval_dir(cfg, c, "pretrained"))),
        ("post-train", _unique(cells, layout.sft, lambda c: (layout.pretrain(c), layout.sft_data(c.seed, c.spec.sft)),
                               stages.post_train, cfg)),
        ("eval", [Job(c.name, stages.evaluate, (cfg, c, "post"), stages.eval_dir(cfg, c, "post"), (layout.sft(c),))
                  for c in cells]),
        ("finetune attack", _unique(cells, layout.finetune, lambda c: (layout.sft(c),), stages.finetune, cfg)),
        ("eval after attack", [Job(c.name, stages.evaluate, (cfg, c, "finetuned"),
                                   stages.eval_dir(cfg, c, "finetuned"), (layout.finetune(c),)) for c in cells]),
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
            f"({pretrained} done), {_count(cfg.worker_count(), 'process', 'processes')} -> {layout.root}")


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def _unique(cells: list[Cell], model: Callable[[Cell], Path], needs: Callable[[Cell], tuple[Path, ...]],
            run: Callable, cfg, *args, makes: Callable[[Cell], Path] | None = None) -> list[Job]:
    """One job per model (cells that share a model train and evaluate it once), named by the model's folder;
    it makes the model unless ``makes`` says otherwise."""
    seen: dict[Path, Cell] = {}
    for cell in cells:
        seen.setdefault(model(cell), cell)
    return [Job(f"{path.name} seed{cell.seed}", run, (cfg, cell, *args), (makes or model)(cell), needs(cell))
            for path, cell in seen.items()]


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


def _run_jobs(phases: list[tuple[str, list[Job]]], workers: int, console: Console) -> None:
    """Every job, with a progress bar per phase in a terminal and a line as each job is done in a log (where a bar
    would be drawn only at the end); with one worker in-process, phase by phase."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    width = max(len(phase) for phase, _ in phases) + 1
    columns = (TextColumn("[bold]{task.fields[phase]:<%d}" % width), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    jobs = [job for _, phase_jobs in phases for job in phase_jobs]
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        phase_of = {job: phase for phase, phase_jobs in phases for job in phase_jobs}
        size = {phase: len(phase_jobs) for phase, phase_jobs in phases}
        # a phase's bar starts its clock when its first job is handed out
        task = {phase: bar.add_task("", total=n, start=False, phase=phase) for phase, n in size.items()}
        left, begun = dict(size), time.perf_counter()

        def started(job: Job) -> None:
            bar.start_task(task[phase_of[job]])  # a started clock keeps its start

        def finished(job: Job) -> None:
            phase = phase_of[job]
            left[phase] -= 1
            bar.update(task[phase], advance=1, description=f"done: {job.name}" if left[phase] else "")
            if not console.is_terminal:
                since_start = timedelta(seconds=round(time.perf_counter() - begun))  # prints as 0:14:02
                console.print(f"{since_start} {phase} {size[phase] - left[phase]}/{size[phase]} done: {job.name}",
                              highlight=False, soft_wrap=True)

        if workers <= 1:
            for job in jobs:
                started(job)
                _call(job.name, job.run, job.args)
                finished(job)
            return
        with worker_pool(workers, visible_gpus()) as pool:
            for job, result in _in_flight(pool, jobs, workers, on_start=started):
                _call(job.name, result, ())
                finished(job)


def _in_flight(pool, jobs: list[Job], limit: int, on_start: Callable[[Job], None] = lambda job: None):
    """(job, result getter) of each job as it finishes. A job is handed out once the jobs that make what it needs
    have finished (of the ready ones, the earliest in ``jobs``), at most ``limit`` at a time. An executor given every
    job at once hands queued ones to workers as soon as they free up: after a Ctrl-C, which each running stage
    answers by checkpointing and returning, the next jobs would start (seen in session 22)."""
    waiting, running, made = list(jobs), {}, set()
    if unmade := {need for job in jobs for need in job.needs} - {job.makes for job in jobs}:
        raise ValueError(f"no job makes {sorted(map(str, unmade))}")

    def submit_ready() -> None:
        while len(running) < limit:
            job = next((j for j in waiting if made.issuperset(j.needs)), None)
            if job is None:
                return
            waiting.remove(job)
            on_start(job)
            running[pool.submit(job.run, *job.args)] = job

    submit_ready()
    try:
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                yield job, future.result
                made.add(job.makes)
            submit_ready()
    except BaseException:
        for future in running:
            future.cancel()
        raise
    if waiting:  # a need that its maker never met: a cycle
        raise ValueError(f"jobs never ready: {', '.join(job.name for job in waiting)}")


def worker_pool(workers: int, gpus: tuple[str, ...] = ()) -> ProcessPoolExecutor:
    """Spawned worker processes (a forked one could not use CUDA); with several ``gpus``, each sees one of them."""
    context = get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=start_worker,
                               initargs=(gpus, context.Value("i", 0)))


def visible_gpus() -> tuple[str, ...]:
    """The GPUs jobs may use, named as CUDA_VISIBLE_DEVICES names them (that variable's list where it is set)."""
    import torch

    if not torch.cuda.is_available():
        return ()
    if (named := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return tuple(d.strip() for d in named.split(",") if d.strip())
    return tuple(str(i) for i in range(torch.cuda.device_count()))


def start_worker(gpus: tuple[str, ...], started) -> None:
    """A worker's set-up: it dies with the runner and, where there are several GPUs, sees the next one in turn
    (``started`` counts the workers begun). Set before the worker's first CUDA call, which reads it."""
    _die_with_parent()
    if len(gpus) > 1:
        with started.get_lock():
            index, started.value = started.value, started.value + 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]


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

