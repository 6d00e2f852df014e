"""Pipelines on datatrove's local executor: sharded, resumable without loss or duplicates, strict about bad input."""

import importlib.util
import json
import subprocess
import sys

import pytest
from datatrove.pipeline.base import PipelineStep

from safepretrain.errors import UserError
from safepretrain.pipeline.documents import reader, shard_files, writer
from safepretrain.pipeline.recipes import RecipeConfig, build_steps
from safepretrain.pipeline.run import ExecutionConfig, run_pipeline, step_table
from tests.pipeline.conftest import write_jsonl


def output_ids(out) -> list[str]:
    return [json.loads(line)["id"] for shard in shard_files(out) for line in shard.read_text().splitlines()]


def input_ids(path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


class CrashOnRank(PipelineStep):
    """Fails the task of one rank half-way (a killed worker)."""

    name, type = "crash", "TEST"

    def __init__(self, rank: int):
        super().__init__()
        self.crash_rank = rank

    def run(self, data, rank=0, world_size=1):
        for i, doc in enumerate(data):
            if rank == self.crash_rank and i == 20:
                raise RuntimeError("worker killed")
            yield doc


def test_two_tasks_share_one_file_and_lose_nothing(tiny_world_dir, world_scorer, tmp_path):
    corpus = tiny_world_dir / "corpus.jsonl"
    steps = build_steps("raw", world_scorer, None, RecipeConfig())
    run_pipeline([reader(corpus), *steps, writer(tmp_path / "out")], tmp_path / "out", {"job": 1},
                 ExecutionConfig(tasks=2))
    assert len(shard_files(tmp_path / "out")) == 2
    assert sorted(output_ids(tmp_path / "out")) == sorted(input_ids(corpus))


def test_a_killed_pipeline_resumes_without_duplicates_or_losses(tiny_world_dir, tmp_path):
    corpus, out, job = tiny_world_dir / "corpus.jsonl", tmp_path / "out", {"job": "resume"}
    with pytest.raises(RuntimeError, match="worker killed"):
        run_pipeline([reader(corpus), CrashOnRank(1), writer(out)], out, job, ExecutionConfig(tasks=3))
    done_before = {p.name for p in (out / "_pipeline" / "completions").iterdir()}
    assert done_before == {"00000"}  # rank 0 finished; rank 1 died; rank 2 never ran
    first_shard = (out / "00000.jsonl").stat().st_mtime_ns
    run_pipeline([reader(corpus), writer(out)], out, job, ExecutionConfig(tasks=3))
    assert (out / "00000.jsonl").stat().st_mtime_ns == first_shard  # the finished task was not redone
    assert sorted(output_ids(out)) == sorted(input_ids(corpus))


def test_a_different_job_in_the_same_folder_is_refused(tiny_world_dir, tmp_path):
    corpus, out = tiny_world_dir / "corpus.jsonl", tmp_path / "out"
    run_pipeline([reader(corpus), writer(out)], out, {"recipe": "raw"}, ExecutionConfig())
    with pytest.raises(UserError, match="holds a different job .*recipe"):
        run_pipeline([reader(corpus), writer(out)], out, {"recipe": "filter"}, ExecutionConfig())


@pytest.mark.parametrize("bad, message", [
    (b'{"text": "ok"', "line 2: not valid JSON"),
    (b'{"body": "no text"}', "line 2: no 'text' string field"),
    (b'{"text": "   "}', "line 2: empty 'text'"),
    (b'{"text": "caf\xe9"}', "line 2: not valid UTF-8"),
    (json.dumps({"text": "x" * 5000}).encode(), "line 2: record of 5,01[0-9] bytes is over the 4,096-byte limit"),
])
def test_bad_records_stop_the_run_with_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine."}, bad, {"text": "also fine."}])
    with pytest.raises(UserError, match=message):
        run_pipeline([reader(path, max_doc_bytes=4096), writer(tmp_path / "out")], tmp_path / "out", {},
                     ExecutionConfig())


def test_bad_records_can_be_counted_and_skipped(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine."}, b"{oops", {"text": ""}, {"text": "also fine."}])
    stats = run_pipeline([reader(path, on_error="skip"), writer(tmp_path / "out")], tmp_path / "out", {},
                         ExecutionConfig())
    _, reader_stats = step_table(stats)[0]
    assert reader_stats["skipped_bad_json"] == 1 and reader_stats["skipped_empty"] == 1
    assert len(output_ids(tmp_path / "out")) == 2


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_compressed_jsonl_and_parquet_round_trip(tmp_path, compression):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i}.", "id": str(i), "extra": i} for i in range(5)])
    run_pipeline([reader(path), writer(tmp_path / "a", compression=compression)], tmp_path / "a", {},
                 ExecutionConfig())
    run_pipeline([reader(tmp_path / "a"), writer(tmp_path / "b", fmt="parquet")], tmp_path / "b", {},
                 ExecutionConfig())
    run_pipeline([reader(tmp_path / "b"), writer(tmp_path / "c")], tmp_path / "c", {}, ExecutionConfig())
    records = [json.loads(line) for line in (tmp_path / "c" / "00000.jsonl").read_text().splitlines()]
    assert [(r["id"], r["text"], r["extra"]) for r in records] == [(str(i), f"doc {i}.", i) for i in range(5)]


def test_intervene_command_end_to_end(tiny_world_dir, tmp_path):
    cmd = [sys.executable, "-m", "safepretrain", "intervene", str(tiny_world_dir / "corpus.jsonl"), "--world",
           str(tiny_world_dir), "--recipe", "reflect", "--segment-words", "30", "--out", str(tmp_path / "srp")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(output_ids(tmp_path / "srp")) == len(input_ids(tiny_world_dir / "corpus.jsonl"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [b"not json"])
    result = subprocess.run(cmd[:4] + [str(bad), "--scorer", "lexicon", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "bad.jsonl, line 1: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (make test installs it)")
def test_ray_executor_gives_the_same_shards_as_the_local_one(tiny_world_dir, world_scorer, tmp_path):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        corpus = tiny_world_dir / "corpus.jsonl"
        outputs = {}
        for executor in ("local", "ray"):
            out = tmp_path / executor
            steps = build_steps("tags", world_scorer, None, RecipeConfig(tag_p=0.2))
            run_pipeline([reader(corpus), *steps, writer(out)], out, {"executor": executor},
                         ExecutionConfig(executor=executor, tasks=2, workers=2))
            outputs[executor] = [p.read_text() for p in shard_files(out)]
        assert len(outputs["ray"]) == 2 and outputs["ray"] == outputs["local"]
    finally:
        ray.shutdown()


def test_a_pipeline_file_composes_steps(tiny_world_dir, world_scorer, world_backend, tmp_path):
    spec = tmp_path / "steps.yaml"
    spec.write_text("steps:\n  - score\n  - refusal: {kinds: [refusal], min_score: 4}\n  - tags: {p: 0.5}\n")
    steps = build_steps(str(spec), world_scorer, world_backend, RecipeConfig())
    assert [type(s).__name__ for s in steps] == ["ScoreDocuments", "RefusalData", "HarmfulnessTags"]
    spec.write_text("steps:\n  - score\n  - shred: {}\n")
    with pytest.raises(UserError, match=r"steps.yaml, step 2: expected one of score, filter"):
        build_steps(str(spec), world_scorer, world_backend, RecipeConfig())
    spec.write_text("steps:\n  - tags: {probability: 0.5}\n")
    with pytest.raises(UserError, match=r"step 1 \(tags\): .*unexpected keyword argument 'probability'"):
        build_steps(str(spec), world_scorer, world_backend, RecipeConfig())
