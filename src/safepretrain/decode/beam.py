"""Beam search and Safe Beam search (Safety Pretraining, Algorithm 2), batched over prompts.

Safe Beam: every beam proposes its top-N next tokens; each candidate is scored by its total log-probability and by
the probability that the token *after* it is the harmful tag (one token of lookahead); the pooled candidates most
likely to lead into the tag (``drop_fraction`` of them, the paper's 50%) are dropped, and the top-k of the rest by
log-probability become the new beams. The lookahead forward pass is not wasted: the kept candidates' lookahead
logits are the next step's logits, so Safe Beam runs one forward of k*N tokens per step where beam search runs k.
Those tokens share one unrepeated KV cache: a beam's N candidates go in as one short sequence whose attention mask
lets each see the beam's past and itself, not its siblings (tree attention), and the cache then keeps, for each new
beam, its parent's past and its own position. Repeating the cache N times instead cost a copy of it per step and
attention reading each beam's past N times: about a quarter of a lookahead step (measured once: `small` preset,
32 beams over 100 cached positions).

Beams compete by summed log-probability; finished answers are ranked by it divided by length ** length_penalty
(as in transformers). The search stops when ``beams`` answers have finished and no live beam, even if it ended at
the next token, would rank above the worst of them (transformers' heuristic; exact when length_penalty is 0).

Prompts are searched together (``batch_size`` at a time): the KV cache holds every live beam of every prompt, each
prompt keeps its own beams, scores and finished answers, and a prompt whose search is over leaves the cache. Each
prompt's choices are made exactly as if it were searched alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from safepretrain.decode.config import Generation


@dataclass
class _Search:
    """One prompt's search: its live beams (new tokens), their summed log-probabilities and finished answers."""

    prompt_ids: list[int]
    prefill: str
    limit: int
    """New tokens this prompt may write."""
    beams: list[list[int]] = field(default_factory=lambda: [[]])
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(1, device="cpu"))
    finished: list[tuple[float, list[int], str]] = field(default_factory=list)
    result: Generation | None = None


def beam_search(decoder, prompts: list[str], prefills: list[str], limits: list[int]) -> list[Generation]:
    size = decoder.config.batch_size
    out: list[Generation] = []
    for start in range(0, len(prompts), size):
        window = slice(start, start + size)
        out += _search_batch(decoder, prompts[window], prefills[window], limits[window])
    return out


def _search_batch(decoder, prompts: list[str], prefills: list[str], limits: list[int]) -> list[Generation]:
    cfg = decoder.config
    safe = cfg.mode == "safebeam"
    ids = decoder.encode(prompts, prefills, limits)
    searches = [_Search(p, f, n) for p, f, n in zip(ids, prefills, limits)]
    live = list(searches)  # in cache order, each holding len(beams) rows
    logits, cache, mask, positions = decoder.prefill_cache(ids)
    for step in range(max(limits)):
        if decoder.ban:
            logits = decoder.ban.apply(logits, [s.prompt_ids + b for s in live for b in s.beams])
        width = min(cfg.candidates if safe else cfg.beams, logits.size(-1))
        top, candidates = logits.log_softmax(-1).topk(width, dim=-1)
        top, tokens = top.cpu(), candidates.cpu()  # each prompt's choices are made on the CPU
        if safe:  # the lookahead: one forward over every candidate of every prompt
            look = lookahead(decoder, candidates, cache, mask, positions)
            tag_probability = look.softmax(-1)[:, decoder.tag_id].cpu()
        kept_rows, kept_tokens, still_live, row = [], [], [], 0
        for search in live:
            rows = slice(row, row + len(search.beams))
            row = rows.stop
            chosen, flat_tokens, parents = _advance(
                search, top[rows], tokens[rows], cfg, decoder,
                tag_probability[rows.start * width:rows.stop * width] if safe else None)
            if search.result is None and step == search.limit - 1:  # out of new tokens
                search.result = _best(decoder, search)
            if search.result is not None:
                continue
            still_live.append(search)
            # safe: the chosen candidates' lookahead rows; plain: the chosen candidates' parent rows
            kept_rows += [(rows.start * width + c) if safe else (rows.start + int(parents[c])) for c in chosen.tolist()]
            kept_tokens += flat_tokens[chosen].tolist()
        live = still_live
        if not live:
            break
        index = torch.tensor(kept_rows, device=decoder.device)
        if safe:
            _keep_candidates(cache, index, width)
            parents = index // width
            logits, mask, positions = look[index], mask[parents], positions[parents] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # the kept candidate's own position
        else:
            cache.batch_select_indices(index)
            logits, mask, positions = decoder.step(torch.tensor(kept_tokens, device=decoder.device), cache,
                                                   mask[index], positions[index])
    return [s.result for s in searches]


def lookahead(decoder, candidates: torch.Tensor, cache, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits after each candidate, (rows * N, vocab) in ``candidates.flatten()`` order, from one forward of each
    row's N candidates as one sequence: all at the row's next position, each seeing the row's past (``mask``) and
    itself. The cache grows by N positions per row; ``_keep_candidates`` trims it."""
    rows, width = candidates.shape
    dtype = getattr(decoder.model, "dtype", torch.float32)
    sees = torch.cat([mask.bool()[:, None, :].expand(rows, width, -1),
                      torch.eye(width, dtype=torch.bool, device=mask.device).expand(rows, width, width)], dim=-1)
    # additive, as eager attention adds it (sdpa takes it too); finfo.min rather than -inf keeps softmax finite
    additive = torch.zeros(sees.shape, dtype=dtype, device=mask.device)
    additive = additive.masked_fill_(~sees, torch.finfo(dtype).min)[:, None]
    return decoder.forward(candidates, additive, positions.expand(rows, width), cache).flatten(0, 1).float()


def _keep_candidates(cache, kept: torch.Tensor, width: int) -> None:
    """After a lookahead, keep one cache row per kept candidate (an index into rows * N): its beam's past and the
    candidate's own position."""
    parents, own = kept // width, kept % width

    def keep(t: torch.Tensor) -> torch.Tensor:
        past = t.size(-2) - width
        t = t.index_select(0, parents)
        # the candidate's position first, the rest cut off
        t[:, :, past] = t[torch.arange(len(kept), device=kept.device), :, past + own]
        return t[:, :, : past + 1]

    for layer in cache.layers:
        if layer.keys is not None and layer.keys.numel():  # not a layer the model never wrote to
            layer.keys, layer.values = keep(layer.keys), keep(layer.values)


def _advance(search: _Search, top: torch.Tensor, tokens: torch.Tensor, cfg, decoder,
             tag_probability: torch.Tensor | None):
    """One step of one prompt's search: record the answers that end, choose the next beams, and set
    ``search.result`` when the search is over. Returns (chosen candidates, candidate tokens, candidate parents)."""
    totals = (search.scores[:, None] + top).flatten()
    flat_tokens = tokens.flatten()
    parents = torch.arange(len(search.beams), device="cpu").repeat_interleave(tokens.size(1))
    ending = torch.tensor([int(t) in decoder.stop_ids for t in flat_tokens], device="cpu")
    for i in ending.nonzero()[:, 0].tolist():
        parent = search.beams[int(parents[i])]
        search.finished.append((_normalised(float(totals[i]), len(parent) + 1, cfg), parent, "stop"))
    if tag_probability is not None:
        chosen = safe_choice(totals, tag_probability, ~ending, cfg.beams, cfg.drop_fraction)
    else:
        chosen = _top(totals, ~ending, cfg.beams)
    if len(chosen) == 0:
        search.result = _best(decoder, search)
        return chosen, flat_tokens, parents
    search.beams = [search.beams[int(parents[c])] + [int(flat_tokens[c])] for c in chosen]
    search.scores = totals[chosen]
    if tag_probability is not None and cfg.stop_on_tag and search.beams[0][-1] == decoder.tag_id:
        search.result = _result(decoder, search.prefill, search.beams[0][:-1], "harmful_tag", tagged=True)
    elif _done(search.finished, float(search.scores.max()), len(search.beams[0]) + 1, cfg):
        search.result = _best(decoder, search)
    return chosen, flat_tokens, parents


def _best(decoder, search: _Search) -> Generation:
    """The best of the finished answers and the live beams (cut short, ``length``)."""
    cfg = decoder.config
    lasting = [(_normalised(float(s), len(b), cfg), b, "length") for s, b in zip(search.scores, search.beams)]
    _, tokens, reason = max(search.finished + lasting, key=lambda f: f[0])
    return _result(decoder, search.prefill, tokens, reason)


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
