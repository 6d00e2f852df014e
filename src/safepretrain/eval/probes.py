"""Linear probes: how separable are safe and unsafe inputs in each layer's hidden states?

A logistic regression per layer on the last-token state, scored by cross-validated AUROC (0.5 = not separable).
The safety-curricula paper reads earlier interventions in cleaner separation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from safepretrain.eval.scoring import last_token_states


def probe_auroc_per_layer(model, tokenizer, safe_texts: Sequence[str], unsafe_texts: Sequence[str],
                          folds: int = 5, seed: int = 0) -> list[float]:
    """Cross-validated AUROC of a linear probe at each layer (index 0 = embeddings)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if min(len(safe_texts), len(unsafe_texts)) < folds:
        raise ValueError(f"linear probes need at least {folds} safe and {folds} unsafe texts")
    states = last_token_states(model, tokenizer, [*safe_texts, *unsafe_texts]).numpy()
    labels = np.array([0] * len(safe_texts) + [1] * len(unsafe_texts))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for layer in range(states.shape[1]):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        scores.append(float(cross_val_score(probe, states[:, layer], labels, cv=splitter, scoring="roc_auc").mean()))
    return scores
