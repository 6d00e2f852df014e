"""Teacher-forced measurements of a causal LM: log-probabilities of continuations, and hidden states."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
    """log p(continuation | context) summed over the continuation's tokens, for each (context, continuation).

    Context and continuation are tokenized separately, so the continuation's tokens are the same whatever the
    context (the comparison of two options at a decision point is then about the options only).
    """
    out: list[float] = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        contexts = tokenizer([c for c, _ in batch], add_special_tokens=False)["input_ids"]
        conts = tokenizer([x for _, x in batch], add_special_tokens=False)["input_ids"]
        seqs = [c + x for c, x in zip(contexts, conts)]
        ids, mask = _right_pad(seqs, tokenizer.pad_token_id or 0, model.device)
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        sums = [logp[row, torch.arange(len(c) - 1, len(c) + len(x) - 1, device=logp.device),
                     torch.tensor(x, device=logp.device)].sum() for row, (c, x) in enumerate(zip(contexts, conts))]
        out += torch.stack(sums).tolist()  # one copy to the CPU per batch, not one per pair
    return out


@torch.inference_mode()
def last_token_states(model, tokenizer, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """(texts, layers + 1, d_model): the hidden state at each text's last token, embeddings first."""
    states = []
    for start in range(0, len(texts), batch_size):
        seqs = tokenizer(list(texts[start:start + batch_size]), add_special_tokens=False)["input_ids"]
        ids, mask = _right_pad(seqs, tokenizer.pad_token_id or 0, model.device)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        last = mask.sum(-1) - 1
        rows = torch.arange(len(seqs), device=last.device)
        states.append(torch.stack([h[rows, last].float() for h in hidden], dim=1).cpu())
    return torch.cat(states)


def _right_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return ids, mask
