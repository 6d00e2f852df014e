"""Has a tags model learned its tag? The check to run before Safe Beam relies on it.

Safe Beam reads P(next = tag) as a harm signal, which only means something if the model (a) predicts the tag where
its training data placed one and (b) predicts it more in harmful text than in benign text. Both failed silently
before: a tag written after a lone space token (LOG run 8) and a new token whose embedding row never moved
(docs/real-model.md) gave P(tag) ~ 1e-7 everywhere, and Safe Beam dropped candidates at random.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from safepretrain.markup import HARMFUL_TAG, strip_markup


@dataclass(frozen=True)
class TagCalibration:
    tag_logprob: float
    """Mean log P(tag) where the tagged training text has one (teacher-forced)."""
    tag_rate: float
    """Tags per token of the tagged texts: what a calibrated model predicts on average there."""
    harmful_p: float
    """Mean P(tag) at every position of the harmful texts with their tags removed..."""
    benign_p: float
    """...and of the benign texts: Safe Beam needs the first well above the second."""
    harmful_texts: int
    benign_texts: int

    @property
    def harmful_to_benign(self) -> float:
        return self.harmful_p / self.benign_p if self.benign_p > 0 else math.inf

    def to_dict(self) -> dict:
        return {**asdict(self), "harmful_to_benign": round(self.harmful_to_benign, 3)}


def tag_calibration(model, tokenizer, tagged_harmful: Sequence[str], benign: Sequence[str], tag: str = HARMFUL_TAG,
                    max_tokens: int = 512) -> TagCalibration:
    """Teacher-forced P(tag) of ``model`` on harmful texts written with their tags and on benign texts."""
    tag_id = tokenizer.convert_tokens_to_ids(tag)
    if tag_id is None or tag_id == tokenizer.unk_token_id:
        raise ValueError(f"{tag!r} is not a token of this tokenizer: this is not a tags model")
    at_tags, tags, tokens = [], 0, 0
    for text in tagged_harmful:
        ids, logprobs = _tag_logprobs(model, tokenizer, text, tag_id, max_tokens)
        follows_tag = ids[1:] == tag_id
        at_tags += logprobs[:-1][follows_tag].tolist()
        tags, tokens = tags + int(follows_tag.sum()), tokens + len(ids)
    if not at_tags:
        raise ValueError(f"none of the {len(tagged_harmful)} harmful texts holds {tag!r} within {max_tokens} tokens")
    return TagCalibration(
        tag_logprob=sum(at_tags) / len(at_tags), tag_rate=tags / tokens,
        harmful_p=_mean_p(model, tokenizer, [strip_markup(t) for t in tagged_harmful], tag_id, max_tokens),
        benign_p=_mean_p(model, tokenizer, benign, tag_id, max_tokens),
        harmful_texts=len(tagged_harmful), benign_texts=len(benign))


def check_saved_model(model_dir: Path, tagged_harmful: Iterable[str], benign: Iterable[str], out: Path,
                      texts: int = 200, seed: int = 0) -> TagCalibration:
    """``write_tag_check`` of the model saved in ``model_dir``."""
    from safepretrain.decode.decoder import load_model

    model, tokenizer = load_model(model_dir)
    return write_tag_check(model, tokenizer, tagged_harmful, benign, out, texts, seed, source=model_dir)


def write_tag_check(model, tokenizer, tagged_harmful: Iterable[str], benign: Iterable[str], out: Path,
                    texts: int = 200, seed: int = 0, source: Path | str = "") -> TagCalibration:
    """``tag_calibration`` on seeded uniform samples of ``texts`` of each kind (streams, read once), written to
    ``out`` (JSON)."""
    from safepretrain.io import reservoir_sample, write_json

    rng = random.Random(seed)
    result = tag_calibration(model, tokenizer, reservoir_sample(tagged_harmful, texts, rng),
                             reservoir_sample(benign, texts, rng))
    write_json(out, {"model": str(source), **result.to_dict()})
    return result


def _mean_p(model, tokenizer, texts: Sequence[str], tag_id: int, max_tokens: int) -> float:
    probabilities = [_tag_logprobs(model, tokenizer, t, tag_id, max_tokens)[1].exp() for t in texts]
    return float(torch.cat(probabilities).mean())


@torch.no_grad()
def _tag_logprobs(model, tokenizer, text: str, tag_id: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The text's token ids and, at each position, log P(next token = tag)."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens], dtype=torch.long)
    logits = model(input_ids=ids[None].to(model.device)).logits[0].float()
    return ids, torch.log_softmax(logits, dim=-1)[:, tag_id].cpu()
