"""Batched decoding with a KV cache: greedy or sampled, optionally guarded by the model's own SRP reflections.

    decoder = Decoder(model, tokenizer, DecodeConfig(mode="guarded", policy="refuse"))
    [g.text for g in decoder.generate(prompts, prefills=attack_prefixes)]

Prompts are left-padded into one batch; finished rows leave the batch (and its KV cache) so that a long answer
does not make short ones pay. Beam and Safe Beam search live in ``beam.py`` and are reached through the same call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from safepretrain.decode.config import DecodeConfig, Generation
from safepretrain.decode.guard import (MarkerEnds, ReflectionWatcher, SequenceBan, opening_ids,
                                       sentence_ends, suppressed_sequences)
from safepretrain.errors import UserError
from safepretrain.markup import END_OF_TEXT, END_OF_TURN, HARMFUL_TAG, PLAIN, SPECIAL, ReflectionFormat

OnToken = Callable[[int, ReflectionWatcher], None]


def load_model(path: str | Path, device: str = "auto"):
    """A saved HF causal LM and its tokenizer, in eval mode, float32 (answers then agree with the CPU's up to float
    rounding), on ``device``: ``auto`` is the GPU when there is one, else the CPU."""
    from transformers import AutoModelForCausalLM

    from safepretrain.train.tokenizer import load_tokenizer

    path, device = Path(path), pick_device(device)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no model here (expected config.json); pass the `model` folder of a training run")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    return model.eval(), tokenizer


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; or a torch device name (cpu, cuda, cuda:1)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r}: name one as torch does (auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: this machine has no CUDA GPU; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                        f"cuda:{torch.cuda.device_count() - 1}")
    return device


def chat_prompt(tokenizer, user_message: str) -> str:
    """The prompt text that asks a chat model to answer ``user_message``."""
    if not tokenizer.chat_template:
        raise UserError("this tokenizer has no chat template; it cannot answer chat prompts")
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                         add_generation_prompt=True)


def resolve_format(tokenizer, name: str) -> ReflectionFormat:
    """``auto``: the special-token format when the tokenizer has those tokens as single ids, else plain text."""
    if name == "auto":
        return SPECIAL if SPECIAL.open in tokenizer.get_vocab() else PLAIN
    return {"plain": PLAIN, "special": SPECIAL}[name]


def stop_token_ids(tokenizer) -> list[int]:
    """End-of-text, end-of-turn and the tokenizer's own eos (e.g. SmolLM2's ``<|im_end|>``)."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in (END_OF_TEXT, END_OF_TURN) if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


class Decoder:
    def __init__(self, model, tokenizer, config: DecodeConfig = DecodeConfig()):
        self.model = model.eval()
        self.device = getattr(model, "device", torch.device("cpu"))
        """Where the model, its KV cache and the tensors fed to it live; the search's bookkeeping stays on the CPU."""
        self.tokenizer = tokenizer
        self.config = config
        self.fmt = resolve_format(tokenizer, config.reflection_format)
        self.stop_ids = set(stop_token_ids(tokenizer))
        if not self.stop_ids:
            raise UserError("the tokenizer has no end-of-text token; decoding would never stop on its own")
        self.marker_ends = MarkerEnds.of(tokenizer, self.fmt)
        self.ban = SequenceBan(suppressed_sequences(tokenizer, self.fmt, config.suppress))
        self.opening = opening_ids(tokenizer, self.fmt) if config.reflect_every else []
        self.request_opening = opening_ids(tokenizer, self.fmt, answer_start=True) if config.reflect_on_request else []
        # recent transformers name the KV cache `cache`; `past_key_values` is deprecated (to be removed in 5.40)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.ends_sentence = sentence_ends(tokenizer) if config.reflect_every else []
        self.tag_id = tokenizer.get_vocab().get(HARMFUL_TAG)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)
        if config.mode == "safebeam" and self.tag_id is None:
            raise UserError(f"safebeam needs the harmful tag {HARMFUL_TAG} as one token of the tokenizer; "
                            "train a tokenizer with `safepretrain tokenizer train` or add the token")
        attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if config.mode == "safebeam" and attention not in (None, "sdpa", "eager"):
            raise UserError(f"safebeam's lookahead passes its own attention mask, which {attention} attention does "
                            "not take; load the model with attn_implementation='sdpa' or 'eager'")

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], prefills: Sequence[str] | None = None,
                 max_new_tokens: Sequence[int] | None = None, on_token: OnToken | None = None) -> list[Generation]:
        """One Generation per prompt. A prefill (an attack) is appended to its prompt as the forced start of the
        answer; the returned text is what the model wrote after it.

        ``max_new_tokens`` sets a limit per prompt (at most the config's). ``on_token(i, watcher)`` is called after
        each token that prompt ``i`` keeps (the watcher holds its text so far): what streaming is built on.
        """
        prefills = list(prefills) if prefills is not None else [""] * len(prompts)
        limits = list(max_new_tokens) if max_new_tokens is not None else [self.config.max_new_tokens] * len(prompts)
        if not len(prefills) == len(limits) == len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(prefills)} prefills and {len(limits)} token limits")
        limits = [max(1, min(n, self.config.max_new_tokens)) for n in limits]
        if self.config.mode in ("beam", "safebeam"):
            from safepretrain.decode.beam import beam_search

            return beam_search(self, list(prompts), prefills, limits)
        out: list[Generation] = []
        size = self.config.batch_size
        for start in range(0, len(prompts), size):
            window = slice(start, start + size)
            callback = (lambda i, w, offset=start: on_token(offset + i, w)) if on_token else None
            out += self._sample_batch(prompts[window], prefills[window], limits[window], seed=start, on_token=callback)
        return out

    def encode(self, prompts: Sequence[str], prefills: Sequence[str], limits: Sequence[int] | None = None) -> list[list[int]]:
        """Token ids of each prompt + prefill; each must leave room for its answer in the model's context."""
        ids = self.tokenizer([p + f for p, f in zip(prompts, prefills)], add_special_tokens=False)["input_ids"]
        context = self.model.config.max_position_embeddings
        for i, seq in enumerate(ids):
            new = limits[i] if limits is not None else self.config.max_new_tokens
            if not seq:
                raise UserError(f"prompt {i} is empty")
            if len(seq) + new > context:
                raise UserError(f"prompt {i} has {len(seq)} tokens; with {new} new tokens the model's context of "
                                f"{context} allows {context - new}")
        return ids

    def prefill_cache(self, ids: list[list[int]]):
        """Run the left-padded prompts once; returns (last logits, cache, attention mask, next position ids)."""
        from transformers import DynamicCache

        width = max(len(s) for s in ids)
        input_ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in ids], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(input_ids, mask, positions, cache)
        return logits, cache, mask, positions[:, -1:] + 1

    def step(self, tokens: torch.Tensor, cache, mask: torch.Tensor, positions: torch.Tensor):
        """Feed one token per row; returns (logits, grown mask, next positions)."""
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return self._forward(tokens[:, None], mask, positions, cache), mask, positions + 1

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The logits at every position of ``input_ids`` (in the model's dtype); the KV cache grows in place.
        ``mask``: the 2D padding mask, or a 4D mask of the caller's own (Safe Beam's lookahead)."""
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{self._cache_arg: cache}).logits

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """The last position's logits."""
        return self.forward(input_ids, mask, positions, cache)[:, -1].float()

    def _pick(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        cfg = self.config
        if cfg.temperature == 0:
            return logits.argmax(-1)
        logits = logits / cfg.temperature
        if cfg.top_k:
            kth = logits.topk(min(cfg.top_k, logits.size(-1)), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        # drawn on the CPU with a CPU generator: the same seed draws the same answers on a GPU
        return torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator)[:, 0]

    def _sample_batch(self, prompts: Sequence[str], prefills: Sequence[str], limits: Sequence[int], seed: int,
                      on_token: OnToken | None) -> list[Generation]:
        cfg = self.config
        ids = self.encode(prompts, prefills, limits)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + seed)
        watchers = [ReflectionWatcher(self.tokenizer, self.fmt, cfg.stop_labels, f) for f in prefills]
        histories = [list(s) for s in ids]
        results: list[Generation | None] = [None] * len(ids)
        # tokens the decoder writes next (a reflection's opening); the attacker's prefill gets no verdict asked first
        forced: list[list[int]] = [list(self.request_opening) if not f else [] for f in prefills]
        live = list(range(len(ids)))  # rows of the batch still decoding, in cache order
        logits, cache, mask, positions = self.prefill_cache(ids)
        for step in range(max(limits)):
            if self.ban:
                logits = self.ban.apply(logits, [histories[r] for r in live])
            tokens = self._pick(logits, generator).tolist()
            keep = []
            for slot, row in enumerate(live):
                if forced[row]:
                    tokens[slot] = forced[row].pop(0)
                token = tokens[slot]
                results[row] = self._advance(watchers[row], histories[row], token, last=step == limits[row] - 1)
                if results[row] is None:
                    keep.append(slot)
                    if self._reflection_due(watchers[row], token, forced[row]):
                        forced[row] = list(self.opening)
                    if on_token:
                        on_token(row, watchers[row])
            if not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                tokens, mask, positions = [tokens[s] for s in keep], mask[index], positions[index]
                live = [live[s] for s in keep]
            logits, mask, positions = self.step(torch.tensor(tokens, device=self.device), cache, mask, positions)
        return results  # type: ignore[return-value]

    def _reflection_due(self, watcher: ReflectionWatcher, token: int, pending: list[int]) -> bool:
        """``reflect_every``: a sentence just ended, long enough after the last reflection, and none is being opened."""
        every = self.config.reflect_every
        return bool(every) and not pending and self.ends_sentence[token] and watcher.since_reflection >= every

    def _advance(self, watcher: ReflectionWatcher, history: list[int], token: int, last: bool) -> Generation | None:
        """Take one sampled token; a Generation when the row is finished, None while it goes on."""
        if token in self.stop_ids:
            return self.finish(watcher, "stop")
        history.append(token)
        flag = watcher.push(token, self.marker_ends.marker[token], self.marker_ends.label[token])
        if flag is not None and self.config.mode == "guarded":
            return self.finish(watcher, "unsafe_reflection", stopped_at=flag.end)
        return self.finish(watcher, "length") if last else None

    def finish(self, watcher: ReflectionWatcher, reason: str, stopped_at: int | None = None) -> Generation:
        """The caller's view of a finished row: the text after the prefill, cut at the stop (policy stop) or
        replaced by the refusal (policy refuse)."""
        full = watcher.text()
        if stopped_at is not None:
            full = full[:stopped_at]
        text = full[len(watcher.prefill):]
        if stopped_at is not None and self.config.policy == "refuse":
            text = self.config.refusal
        reflections = tuple(r for r in watcher.reflections if stopped_at is None or r.end <= stopped_at)
        return Generation(text, reason, len(watcher.ids), reflections, stopped_at)
