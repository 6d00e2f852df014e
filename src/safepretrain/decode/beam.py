"""Beam search and Safe Beam search (Safety Pretraining, Algorithm 2), one prompt at a time.

Safe Beam: every beam proposes its top-N next tokens; each candidate is scored by its total log-probability and by
the probability that the token *after* it is the harmful tag (one token of lookahead); the pooled candidates most
likely to lead into the tag (``drop_fraction`` of them, the paper's 50%) are dropped, and the top-k of the rest by
log-probability become the new beams. The lookahead forward pass is not wasted: the kept candidates' lookahead
logits are the next step's logits, so Safe Beam runs one forward of k*N rows per step where beam search runs k.

Beams compete by summed log-probability; finished answers are ranked by it divided by length ** length_penalty
(as in transformers). The search stops when ``beams`` answers have finished and no live beam, even if it ended at
the next token, would rank above the worst of them (transformers' heuristic; exact when length_penalty is 0).
"""

from __future__ import annotations

import torch

from safepretrain.decode.config import Generation


def beam_search(decoder, prompt: str, prefill: str) -> Generation:
    cfg = decoder.config
    safe = cfg.mode == "safebeam"
    width = cfg.candidates if safe else cfg.beams
    prompt_ids = decoder.encode([prompt], [prefill])[0]
    logits, cache, mask, positions = decoder.prefill_cache([prompt_ids])
    beams: list[list[int]] = [[]]
    scores = torch.zeros(1)
    finished: list[tuple[float, list[int], str]] = []
    for _ in range(cfg.max_new_tokens):
        if decoder.ban:
            logits = decoder.ban.apply(logits, [prompt_ids + b for b in beams])
        logp = logits.log_softmax(-1)
        top, tokens = logp.topk(min(width, logp.size(-1)), dim=-1)  # (beams, width)
        totals = (scores[:, None] + top).flatten()
        tokens, parents = tokens.flatten(), torch.arange(len(beams)).repeat_interleave(tokens.size(1))
        ending = torch.tensor([int(t) in decoder.stop_ids for t in tokens])
        for i in ending.nonzero()[:, 0].tolist():
            parent = beams[int(parents[i])]
            finished.append((_normalised(float(totals[i]), len(parent) + 1, cfg), parent, "stop"))
        if safe:
            cache.batch_repeat_interleave(tokens.size(0) // len(beams))
            look, mask, positions = decoder.step(tokens, cache, mask.repeat_interleave(width, 0),
                                                 positions.repeat_interleave(width, 0))
            tag_probability = look.softmax(-1)[:, decoder.tag_id]
            chosen = safe_choice(totals, tag_probability, ~ending, cfg.beams, cfg.drop_fraction)
        else:
            chosen = _top(totals, ~ending, cfg.beams)
        if len(chosen) == 0:
            break
        beams = [beams[int(parents[c])] + [int(tokens[c])] for c in chosen]
        scores = totals[chosen]
        if safe:
            cache.batch_select_indices(chosen)
            logits, mask, positions = look[chosen], mask[chosen], positions[chosen]
        else:
            cache.batch_select_indices(parents[chosen])
            logits, mask, positions = decoder.step(tokens[chosen], cache, mask[parents[chosen]], positions[parents[chosen]])
        if safe and cfg.stop_on_tag and beams[0][-1] == decoder.tag_id:
            return _result(decoder, prefill, beams[0][:-1], "harmful_tag", tagged=True)
        if _done(finished, float(scores.max()), len(beams[0]) + 1, cfg):
            break
    live = [(_normalised(float(s), len(b), cfg), b, "length") for s, b in zip(scores, beams)]
    _, best, reason = max(finished + live, key=lambda f: f[0])
    return _result(decoder, prefill, best, reason)


def _normalised(total: float, length: int, cfg) -> float:
    return total / max(length, 1) ** cfg.length_penalty


def _done(finished: list, best_live_total: float, next_length: int, cfg) -> bool:
    if cfg.length_penalty == 0:  # raw sums only fall: a finished answer above every live beam stays on top
        return bool(finished) and max(f[0] for f in finished) >= best_live_total
    if len(finished) < cfg.beams:
        return False
    worst_kept = sorted((f[0] for f in finished), reverse=True)[cfg.beams - 1]
    return worst_kept >= _normalised(best_live_total, next_length, cfg)


def safe_choice(totals: torch.Tensor, tag_probability: torch.Tensor, allowed: torch.Tensor, k: int,
                drop_fraction: float) -> torch.Tensor:
    """Indices of the new beams: drop the ``drop_fraction`` of allowed candidates with the highest tag probability,
    then take the top-``k`` of the rest by total log-probability (best first)."""
    pool = allowed.nonzero()[:, 0]
    if len(pool) == 0:
        return pool
    n_keep = max(1, len(pool) - int(len(pool) * drop_fraction))
    least_tagged = pool[tag_probability[pool].argsort(stable=True)[:n_keep]]
    return least_tagged[totals[least_tagged].argsort(descending=True, stable=True)[:k]]


def _top(totals: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    pool = allowed.nonzero()[:, 0]
    return pool[totals[pool].argsort(descending=True, stable=True)[:k]]


def _result(decoder, prefill: str, tokens: list[int], reason: str, tagged: bool = False) -> Generation:
    text = decoder.tokenizer.decode(tokens, skip_special_tokens=False)
    reflections = tuple(r for r in decoder.fmt.find(prefill + text) if r.end > len(prefill))
    stopped_at = len(prefill) + len(text) if tagged else None
    return Generation(text, reason, len(tokens) + tagged, reflections, stopped_at)
