"""Where an experiment stands, read from its folder alone: what each phase has finished, what is part-way.

A laptop demo runs for hours and a cluster grid for days; this answers "how far is it, and is it moving" without
the terminal that started it. Nothing is run or changed: a stage counts as done when the file it writes last
exists (the same test a resumed run uses to skip it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safepretrain.experiment import stages
from safepretrain.experiment.config import ExperimentConfig
from safepretrain.experiment.run import Job, experiment_phases, grid

TRAINED_AT = {stages.pretrain: stages.Layout.pretrain, stages.post_train: stages.Layout.sft,
              stages.finetune: stages.Layout.finetune}
"""Each training stage's run folder (a cell's)."""


@dataclass(frozen=True)
class PhaseStatus:
    phase: str
    done: int
    total: int
    started: tuple[str, ...]
    """Jobs begun and not finished, each with how far it got (a stopped run's look the same as a running one's)."""


def experiment_status(cfg: ExperimentConfig) -> list[PhaseStatus]:
    """Each phase of ``cfg``'s grid (as ``load_saved`` read it from the folder), in order."""
    return [_phase_status(phase, jobs) for phase, jobs in experiment_phases(cfg, grid(cfg))]


def _phase_status(phase: str, jobs: list[Job]) -> PhaseStatus:
    done, started = 0, []
    for job in jobs:
        finished, progress = job_state(job.run, job.args)
        done += finished
        if progress:
            started.append(f"{job.name}: {progress}")
    return PhaseStatus(phase, done, len(jobs), tuple(started))


def job_state(job, args: tuple) -> tuple[bool, str]:
    """(finished, how far a begun job got; "" when not begun or finished)."""
    cfg, subject = args[0], args[1]  # a seed (data stages) or a cell
    layout = stages.Layout(cfg)
    if job is stages.make_world:
        return (layout.world(subject) / stages.WORLD_DONE).is_file(), ""
    if job is stages.make_tokenizer:
        return (layout.tokenizer(subject) / stages.TOKENIZER_DONE).is_file(), ""
    if job is stages.make_corpus:
        return layout.corpus(subject, args[2]).is_file(), ""
    if job is stages.make_sft_data:
        return stages.sft_data_path(cfg, subject, args[2]).is_file(), ""
    if job in TRAINED_AT:
        out = TRAINED_AT[job](layout, subject)
        return ((True, "") if (out / stages.MODEL_DONE).is_file() else (False, training_progress(out)))
    if job is stages.evaluate:
        out = stages.eval_dir(cfg, subject, args[2])
        return ((True, "") if (out / stages.EVAL_DONE).is_file() else (False, evaluation_progress(out)))
    raise ValueError(f"no status for stage {job.__name__}")


def training_progress(out: Path) -> str:
    """"step 420 of 733 (57%), 7,400 tokens/s, ~3 min left" from a training run's last metrics record."""
    metrics = out / "metrics.jsonl"
    if not metrics.is_file():
        return ""
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    if not lines:
        return "starting"
    last = json.loads(lines[-1])
    step, total, rate = last["step"], last.get("total_steps"), last["tokens_per_s"]
    if not total:  # runs logged before it was recorded have only the step
        return f"step {step}, {rate:,.0f} tokens/s"
    seconds_left = (total - step) * last["tokens"] / step / rate if step and rate and last.get("tokens") else None
    left = f", {time_left(seconds_left)}" if seconds_left is not None else ""
    return f"step {step} of {total} ({step / total:.0%}), {rate:,.0f} tokens/s{left}"


def time_left(seconds: float) -> str:
    """At the last logged speed; a stopped run's estimate is what it would need once continued."""
    if seconds < 60:
        return "under a minute left"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min left"
    return f"~{seconds / 3600:.1f} h left"


def evaluation_progress(out: Path) -> str:
    samples = out / "samples.jsonl"
    if not samples.is_file():
        return ""
    with samples.open(encoding="utf-8") as f:
        return f"{sum(1 for line in f if line.strip()):,} samples written"
