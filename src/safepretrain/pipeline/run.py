"""Running a pipeline on datatrove's executors: local (default), Ray or Slurm, resumable per task.

``OUT/`` receives one output shard per task; ``OUT/_pipeline/`` holds datatrove's logs, completion markers and stats,
plus ``job.json`` (what ran). Re-running the same job skips completed tasks and redoes the others from scratch (their
shards are rewritten whole), so a killed run resumes without losing or duplicating documents.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safepretrain.errors import UserError
from safepretrain.io import write_json

LOGS = "_pipeline"
Executor = Literal["local", "ray", "slurm"]


def _task_logger(logging_dir, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's task logger, but the console only gets warnings and errors, and never a traceback for a
    UserError (the CLI prints it as one line); the task's log file keeps everything."""
    import sys

    from loguru import logger

    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"

    def console_worthy(record) -> bool:
        exc = record["exception"]
        return not (exc and exc.type is not None and issubclass(exc.type, UserError))

    logger.add(sys.stderr, level="WARNING" if local_rank == 0 else "ERROR", format=fmt, filter=console_worthy)
    logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
    return logfile


def _close_task_logger(logfile) -> None:
    import sys

    from loguru import logger

    logger.complete()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    logfile.close()


def _use_quiet_task_logs() -> None:
    # datatrove has no log-level setting; its executors look these two functions up in their own module namespace.
    import datatrove.executor.base as base

    base.add_task_logger, base.close_task_logger = _task_logger, _close_task_logger


_use_quiet_task_logs()  # at import, so that spawned worker processes (which import this module) get it too


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    executor: Executor = "local"
    tasks: int = 1
    """Output shards (and units of resumption)."""
    workers: int = 1
    """Tasks run at once (local: processes; ray: concurrent tasks)."""
    ray_mem_per_cpu_gb: float = 1.0
    slurm_partition: str | None = None
    slurm_time: str = "04:00:00"


def run_pipeline(pipeline: list, out: Path, job: dict[str, Any], execution: ExecutionConfig,
                 overwrite: bool = False) -> dict:
    """Run reader + steps + writer; returns the merged per-step stats (as datatrove's stats.json)."""
    out = Path(out)
    logs = out / LOGS
    _check_job(out, logs, job, overwrite)
    logs.mkdir(parents=True, exist_ok=True)
    write_json(logs / "job.json", job)
    executor = _executor(pipeline, logs, execution)
    try:
        executor.run()
    except UserError:
        raise
    except Exception as e:  # a task failed: finished shards stay, the next run redoes only the unfinished tasks
        cause = _user_error_in(e)
        if cause is not None:
            raise cause from None
        raise
    incomplete = [r for r in range(execution.tasks) if not executor.is_rank_completed(r)]
    if incomplete:
        raise UserError(f"{len(incomplete)} of {execution.tasks} tasks did not finish (see {logs}/logs); "
                        "run the same command again to resume them")
    stats_file = logs / "stats.json"
    return json.loads(stats_file.read_text()) if stats_file.is_file() else {}


def _check_job(out: Path, logs: Path, job: dict, overwrite: bool) -> None:
    previous = logs / "job.json"
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite:
        shutil.rmtree(out)
        return
    if not previous.is_file():
        raise UserError(f"output folder {out} is not empty and holds no pipeline job; choose another --out or "
                        "pass --overwrite")
    before = json.loads(previous.read_text())
    if before != json.loads(json.dumps(job)):
        changed = sorted(k for k in set(before) | set(job) if before.get(k) != job.get(k))
        raise UserError(f"{out} holds a different job (changed: {', '.join(changed)}); pass --overwrite to replace "
                        "it or choose another --out")


def _executor(pipeline: list, logs: Path, e: ExecutionConfig):
    if e.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=e.tasks, workers=e.workers, logging_dir=str(logs),
                                     start_method="spawn")
    if e.executor == "ray":
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'safepretrain[ray]'") from None
        from datatrove.executor.ray import RayPipelineExecutor

        if not ray.is_initialized():  # joins $RAY_ADDRESS's cluster if set, else starts a local one
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        return RayPipelineExecutor(pipeline, tasks=e.tasks, workers=e.workers, logging_dir=str(logs),
                                   mem_per_cpu_gb=e.ray_mem_per_cpu_gb)
    if e.executor == "slurm":
        from datatrove.executor.slurm import SlurmPipelineExecutor

        if not e.slurm_partition:
            raise UserError("--executor slurm needs --slurm-partition")
        return SlurmPipelineExecutor(pipeline, tasks=e.tasks, workers=e.workers, logging_dir=str(logs),
                                     partition=e.slurm_partition, time=e.slurm_time, job_name="safepretrain")
    raise UserError(f"unknown executor {e.executor!r}; choose local, ray or slurm")


def _user_error_in(error: BaseException) -> UserError | None:
    """A UserError raised inside a worker process, however the executor wrapped it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def step_table(stats: list[dict]) -> list[tuple[str, dict[str, float]]]:
    """(step name, {stat: total}) from datatrove's stats.json, for printing."""
    rows = []
    for step in stats:
        totals = {}
        for name, value in step.get("stats", {}).items():
            totals[name] = value.get("total", value) if isinstance(value, dict) else value
        rows.append((step.get("name", "?"), totals))
    return rows
