from dataclasses import replace
from pathlib import Path

import pytest

from safepretrain.train.tokenizer import corpus_texts, train_tokenizer
from safepretrain.world.config import tiny
from safepretrain.world.entities import build_world
from safepretrain.world.episodes import EpisodeSampler
from safepretrain.world.generate import WorldFolder, generate_world
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.oracle import Oracle


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory) -> Path:
    """A generated tiny world, shared read-only by the session's tests (copy it before corrupting it)."""
    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(tiny(), out)
    return out


@pytest.fixture(scope="session")
def pretext_world_dir(tmp_path_factory) -> Path:
    """The tiny world with a pretext in every harm episode of its corpus (read-only)."""
    out = tmp_path_factory.mktemp("world") / "pretext"
    generate_world(replace(tiny(), pretext_share=1.0), out)
    return out


@pytest.fixture(scope="session")
def chat_world_dir(tmp_path_factory) -> Path:
    """The pretext world with half of its corpus's episodes written as chats (read-only)."""
    out = tmp_path_factory.mktemp("world") / "chat"
    generate_world(replace(tiny(), pretext_share=1.0, chat_share=0.5), out)
    return out


@pytest.fixture(scope="session")
def covert_world_dir(tmp_path_factory) -> Path:
    """The tiny world with every benign "cause <effect>" episode asked covertly, and so its held-out harm (read-only)."""
    out = tmp_path_factory.mktemp("world") / "covert"
    generate_world(replace(tiny(), covert_share=1.0), out)
    return out


@pytest.fixture(scope="session")
def tiny_folder(tiny_world_dir) -> WorldFolder:
    return WorldFolder(tiny_world_dir)


@pytest.fixture(scope="session")
def world():
    return build_world(tiny())


@pytest.fixture(scope="session")
def oracle(world) -> Oracle:
    return Oracle(world)


@pytest.fixture(scope="session")
def labeler(oracle) -> SegmentLabeler:
    return SegmentLabeler(oracle)


@pytest.fixture(scope="session")
def sampler(world, oracle) -> EpisodeSampler:
    return EpisodeSampler(world, oracle)


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_world_dir, tmp_path_factory) -> Path:
    """A BPE trained on the tiny world's corpus and chats (saved; read-only for tests)."""
    out = tmp_path_factory.mktemp("tokenizer")
    texts = corpus_texts([tiny_world_dir / "corpus.jsonl", tiny_world_dir / "sft.jsonl"])
    train_tokenizer(texts, vocab_size=768).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from safepretrain.train.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def meta_default_device():
    """Tensors made without naming a device land on the meta device, where they hold no data: mixed with a CPU
    model's, they fail. Code that passes under it places every tensor it feeds a model on that model's device (and
    keeps its own bookkeeping explicitly on the CPU), as a model on a GPU needs -- checked without one."""
    import torch

    torch.set_default_device("meta")
    yield
    torch.set_default_device(None)
