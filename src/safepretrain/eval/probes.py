"""Linear probes: how separable are safe and unsafe inputs in each layer's hidden states?

A logistic regression per layer on the last-token state, scored by cross-validated AUROC (0.5 = not separable).
The safety-curricula paper reads earlier interventions in cleaner separation. A probe shows a representation
beyond the words only where it beats the same probe on the words themselves (``bag_of_words_auroc``): requests
that name their harm ("cause a stroke") are separable before any model reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from safepretrain.eval.scoring import last_token_states


def probe_auroc_per_layer(model, tokenizer, safe_texts: Sequence[str], unsafe_texts: Sequence[str],
                          folds: int = 5, seed: int = 0) -> list[float]:
    """Cross-validated AUROC of a linear probe at each layer (index 0 = embeddings)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = _labels(safe_texts, unsafe_texts, folds)
    states = last_token_states(model, tokenizer, [*safe_texts, *unsafe_texts]).numpy()
    return [_cv_auroc(make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)), states[:, layer],
                      labels, folds, seed)
            for layer in range(states.shape[1])]


def bag_of_words_auroc(safe_texts: Sequence[str], unsafe_texts: Sequence[str], folds: int = 5,
                       seed: int = 0) -> float:
    """The lexical baseline: the same probe and folds on counts of the texts' words and word pairs, no model."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    labels = _labels(safe_texts, unsafe_texts, folds)
    probe = make_pipeline(CountVectorizer(ngram_range=(1, 2), token_pattern=r"[^\s.,:;?!]+"),
                          LogisticRegression(C=1.0, max_iter=2000))
    return _cv_auroc(probe, np.array([*safe_texts, *unsafe_texts], dtype=object), labels, folds, seed)


def _labels(safe_texts: Sequence[str], unsafe_texts: Sequence[str], folds: int) -> np.ndarray:
    if min(len(safe_texts), len(unsafe_texts)) < folds:
        raise ValueError(f"linear probes need at least {folds} safe and {folds} unsafe texts")
    return np.array([0] * len(safe_texts) + [1] * len(unsafe_texts))


def _cv_auroc(probe, features, labels: np.ndarray, folds: int, seed: int) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=splitter, scoring="roc_auc").mean())
