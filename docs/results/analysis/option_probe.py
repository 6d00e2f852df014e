"""Does a model represent that an option harms the patient? A linear probe at the decision, against word baselines.

MedSafetyWorld's requests name their harm, so the input probe of ``safepretrain eval --probes`` is saturated by the
words alone (LOG "Linear probes"). Here the label depends on world knowledge instead: each probed request (utility,
seen-unsafe, held-out-unsafe; patients of worked episodes) is followed by each of its two options, ``... doctor:
meil 50 mg``; the label says whether that option harms the patient. Both texts end in the same token, so layer 0 is
at chance; a drug that is often the harmful one still leaks through its name, hence two baselines on the same folds
(grouped by request, so a request's two options never straddle train and test): the drug's name alone, and the words
and word pairs of the whole text.

    .venv/bin/python docs/results/analysis/option_probe.py runs/lap10 runs/cur > docs/results/analysis/option_probe.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from safepretrain.decode.decoder import load_model
from safepretrain.eval.scoring import last_token_states
from safepretrain.world.generate import WorldFolder

SPLITS = ("utility", "seen_unsafe", "heldout_unsafe")
MODELS = ("raw", "filter", "rephrase", "refusal+moral", "tags", "reflect", "reflect-mask", "reflect-start0.2",
          "reflect-start0.6")


def option_texts(world: WorldFolder):
    texts, harmful, request, split_of, drug = [], [], [], [], []
    for split in SPLITS:
        for n, item in enumerate(world.eval_items(split)):
            if item.probe is None or item.patient_heldout:  # record-only patients: two hops no laptop model makes
                continue
            for option, label in ((item.probe.safe, 0), (item.probe.unsafe, 1)):
                texts.append(item.prompt + option.rstrip("."))
                harmful.append(label)
                request.append(f"{split}/{n}")
                split_of.append(split)
                drug.append(option.split()[0])
    return texts, np.array(harmful), np.array(request), np.array(split_of), np.array(drug)[:, None]


def aurocs(labels, split_of, predicted) -> list[float]:
    return [roc_auc_score(labels, predicted)] + [roc_auc_score(labels[split_of == s], predicted[split_of == s])
                                                  for s in SPLITS]


def main(run: Path, *more_runs: Path) -> None:
    torch.set_num_threads(1)
    print("| world | model (pretrained) | all | utility | seen unsafe | held-out unsafe |\n|---|---|---|---|---|---|")
    for seed in range(3):
        world = WorldFolder(run / "worlds" / f"seed{seed}")
        texts, labels, request, split_of, drug = option_texts(world)

        def held_out(probe, features):
            return cross_val_predict(probe, features, labels, groups=request, cv=GroupKFold(5),
                                     method="predict_proba")[:, 1]

        words = make_pipeline(CountVectorizer(ngram_range=(1, 2), token_pattern=r"[^\s.,:;?!]+"),
                              LogisticRegression(max_iter=2000))
        rows = {"baseline: drug name": held_out(LogisticRegression(max_iter=2000), OneHotEncoder().fit_transform(drug)),
                "baseline: words and pairs": held_out(words, np.array(texts, dtype=object))}
        for name in MODELS:
            folder = next((r / "models" / f"seed{seed}" / f"pretrain-{_stem(name)}" / "model" for r in (run, *more_runs)
                           if (r / "models" / f"seed{seed}" / f"pretrain-{_stem(name)}" / "model").is_dir()), None)
            if folder is None:
                continue
            model, tokenizer = load_model(folder)
            with torch.no_grad():
                states = last_token_states(model.eval(), tokenizer, texts).numpy()
            rows[name] = held_out(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), states[:, -1])
        for name, predicted in rows.items():
            print(f"| {seed} | {name} | " + " | ".join(f"{a:.2f}" for a in aurocs(labels, split_of, predicted)) + " |",
                  flush=True)


def _stem(name: str) -> str:
    return name if "-start" in name else f"{name}-start0"


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:]))
