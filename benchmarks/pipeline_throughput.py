"""Pipeline throughput: score (embedding) + SRP reflect (embedding per segment) over real-ish documents.

    python benchmarks/pipeline_throughput.py --docs 10000

Measured in one run, each with one torch thread per worker: a plain Python loop over the same work (read JSONL,
score, reflect, write JSONL), the datatrove pipeline with 1 worker, and with 2 workers. Prints docs/s, datatrove's
overhead against the loop (target <= 10%) and the 2-worker speed-up (target >= 1.8x). Documents are MedSafetyWorld
laptop-corpus documents (clinical notes, dialogues, records: 10-120 words each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker process, for every configuration

import numpy as np  # noqa: E402
import torch  # noqa: E402

from safepretrain.markup import SPECIAL  # noqa: E402
from safepretrain.pipeline.documents import reader, writer  # noqa: E402
from safepretrain.pipeline.interventions.reflect import Reflect, render_reflected, segment_texts  # noqa: E402
from safepretrain.pipeline.run import ExecutionConfig, run_pipeline  # noqa: E402
from safepretrain.pipeline.score import ScoreDocuments  # noqa: E402
from safepretrain.pipeline.scorers.embedding import (  # noqa: E402
    EmbeddingScorer, SentenceEncoder, save_head, train_head,
)
from safepretrain.world.config import preset_config  # noqa: E402
from safepretrain.world.generate import generate_world  # noqa: E402


def make_inputs(work: Path, n_docs: int) -> tuple[Path, Path]:
    generate_world(preset_config("laptop", 0), work / "world")
    lines = (work / "world" / "corpus.jsonl").read_text().splitlines()[:n_docs]
    corpus = work / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": json.loads(line)["id"], "text": json.loads(line)["text"]}) + "\n"
                              for line in lines))
    encoder = SentenceEncoder()
    sentences = [s["text"] for line in lines[:500] for s in json.loads(line)["segments"]]
    labels = np.array([5 if s["label"] == "unsafe" else 0 for line in lines[:500]
                       for s in json.loads(line)["segments"]])
    head = train_head(encoder.encode(sentences), labels)
    save_head(head, work / "head", {}, {"version": "bench", "max_tokens": encoder.max_tokens}, overwrite=True)
    return corpus, work / "head"


def plain_loop(corpus: Path, head: Path, out: Path) -> float:
    scorer = EmbeddingScorer(head)
    start = time.perf_counter()
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    with out.open("w") as f:
        for i in range(0, len(records), 64):
            batch = records[i:i + 64]
            pieces = [segment_texts(r["text"]) for r in batch]
            segment_scores = iter(scorer.score_batch([p for ps in pieces for p in ps]))
            for record, score, doc_pieces in zip(batch, scorer.score_batch([r["text"] for r in batch]), pieces):
                record["safety@embedding"] = score.to_dict()
                scores = [next(segment_scores) for _ in doc_pieces]
                record["text"], record["reflections"] = render_reflected(doc_pieces, scores, SPECIAL)
                f.write(json.dumps(record) + "\n")
    return len(records) / (time.perf_counter() - start)


def datatrove_run(corpus: Path, head: Path, out: Path, workers: int, n_docs: int) -> float:
    scorer = EmbeddingScorer(head)
    pipeline = [reader(corpus), ScoreDocuments(scorer), Reflect(scorer, SPECIAL, batch_size=64), writer(out)]
    start = time.perf_counter()
    run_pipeline(pipeline, out, {"bench": workers}, ExecutionConfig(tasks=workers, workers=workers))
    return n_docs / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        corpus, head = make_inputs(work, args.docs)
        loop = plain_loop(corpus, head, work / "loop.jsonl")
        one = datatrove_run(corpus, head, work / "one", 1, args.docs)
        two = datatrove_run(corpus, head, work / "two", 2, args.docs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.docs:,} documents, score (embedding) + reflect (embedding per segment), 1 torch thread per worker")
    print(f"plain Python loop:        {loop:8.1f} docs/s")
    print(f"datatrove, 1 worker:      {one:8.1f} docs/s   overhead {1 - one / loop:+.1%} (target <= 10%)")
    print(f"datatrove, 2 workers:     {two:8.1f} docs/s   speed-up {two / one:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main()
