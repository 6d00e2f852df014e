import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world_scorer(tiny_world_dir):
    from safepretrain.pipeline.scorers.oracle import OracleScorer

    return OracleScorer(tiny_world_dir)


@pytest.fixture(scope="session")
def world_backend(tiny_world_dir):
    from safepretrain.pipeline.world_backend import WorldBackend

    return WorldBackend(tiny_world_dir)


@pytest.fixture(scope="session")
def world_docs(tiny_world_dir):
    """The tiny world's corpus as datatrove Documents (as the reader makes them)."""
    from datatrove.data import Document

    docs = []
    for line in (tiny_world_dir / "corpus.jsonl").read_text().splitlines():
        record = json.loads(line)
        docs.append(Document(text=record.pop("text"), id=record.pop("id"), metadata=record))
    return docs


def fresh(docs):
    """Deep copies (steps edit documents in place)."""
    import copy

    return [copy.deepcopy(d) for d in docs]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else json.dumps(l).encode()) + b"\n" for l in lines))
    return path
