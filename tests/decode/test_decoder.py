import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import LlamaForCausalLM

from safepretrain.decode.beam import lookahead, safe_choice
from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder
from safepretrain.errors import UserError
from safepretrain.markup import HARMFUL_TAG, SPECIAL, END_OF_TEXT
from safepretrain.train.models import preset_config

from tests.decode.conftest import MarkovLM, markov_table

PROMPTS = ["check meil 300 mg: it treats", "what should laon get to cause a stroke in laon?", "so, give"]


@pytest.fixture(scope="module")
def random_llama(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(preset_config("tiny", len(tokenizer))).eval()


def test_plain_greedy_equals_hf_generate_token_for_token(random_llama, tokenizer):
    decoder = Decoder(random_llama, tokenizer, DecodeConfig(max_new_tokens=24, batch_size=3))
    ours = decoder.generate(PROMPTS)
    for prompt, generation in zip(PROMPTS, ours):
        x = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        hf = random_llama.generate(**x, do_sample=False, max_new_tokens=24, eos_token_id=sorted(decoder.stop_ids),
                                   pad_token_id=decoder.pad_id)
        hf_ids = hf[0, x["input_ids"].shape[1]:].tolist()
        hf_ids = [t for t in hf_ids if t not in decoder.stop_ids]
        assert generation.text == tokenizer.decode(hf_ids, skip_special_tokens=False)
        assert generation.new_tokens == len(hf_ids)


def test_guarding_changes_nothing_when_the_model_never_reflects(random_llama, tokenizer):
    plain = Decoder(random_llama, tokenizer, DecodeConfig(max_new_tokens=16)).generate(PROMPTS)
    guarded = Decoder(random_llama, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=16)).generate(PROMPTS)
    assert [g.text for g in guarded] == [g.text for g in plain]


def _reflecting_model(tokenizer, draw_logits, words: list[int]) -> MarkovLM:
    """A random chain that writes words and special reflections of random labels, then stops. A label is followed
    by its closing marker, by words (behavior types, or text with the reflection left open) or by the end."""
    vocab = tokenizer.get_vocab()
    open_, close = vocab[SPECIAL.open], vocab[SPECIAL.close]
    labels = [vocab[t] for t in ("<|safe|>", "<|unsafe|>", "<|controversial|>")]
    stop = vocab[END_OF_TEXT]
    favoured = {}
    for w in words:
        favoured[w] = dict(zip([*words, open_, close, stop], draw_logits(len(words) + 3)))
    favoured[open_] = dict(zip(labels, draw_logits(3)))
    for label in labels:
        favoured[label] = dict(zip([close, stop, *words], draw_logits(len(words) + 2)))
    favoured[close] = dict(zip(words, draw_logits(len(words))))
    return MarkovLM(markov_table(len(tokenizer), favoured))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), policy=st.sampled_from(["stop", "refuse"]),
       prefill=st.sampled_from(["", " <|reflect|><|unsafe|><|/reflect|> so,"]), asked=st.booleans())
def test_no_text_after_an_unsafe_reflection_ever_reaches_the_caller(tokenizer, seed, policy, prefill, asked):
    g = torch.Generator().manual_seed(seed)
    vocab = tokenizer.get_vocab()
    words = [vocab[w] for w in sorted(w for w in vocab if w.startswith("Ġ") and w[1:].isalpha() and len(w) > 4)[:3]]
    model = _reflecting_model(tokenizer, lambda n: (torch.randn(n, generator=g) * 2).tolist(), words)
    base = dict(max_new_tokens=40, temperature=1.0, seed=seed, batch_size=1, reflect_on_request=asked)
    prompts = [tokenizer.decode([w]) for w in words[:2]]
    prefills = [prefill] * len(prompts)
    plain = Decoder(model, tokenizer, DecodeConfig(**base)).generate(prompts, prefills)
    guarded = Decoder(model, tokenizer, DecodeConfig(mode="guarded", policy=policy, **base)).generate(prompts, prefills)
    for free, safe in zip(plain, guarded):
        full = prefill + free.text
        flags = [r for r in SPECIAL.decisions(full) if r.end > len(prefill) and not r.is_safe]
        if not flags:
            assert safe.text == free.text and not safe.flagged
            continue
        written = dict(SPECIAL.label_tokens)[flags[0].label]
        label_end = full.index(written, flags[0].start) + len(written)
        # decoding stops on the first non-Safe label, whether or not the model would have closed the reflection
        assert safe.finish_reason == "unsafe_reflection" and safe.stopped_at == label_end
        if policy == "refuse":
            assert safe.text == DecodeConfig().refusal
        else:
            assert prefill + safe.text == full[:label_end]  # nothing after it
        assert all(r.is_safe for r in safe.reflections[:-1]) and not safe.reflections[-1].is_safe


def test_suppression_attack_keeps_the_model_from_reflecting(tokenizer):
    vocab = tokenizer.get_vocab()
    word = vocab["give"] if "give" in vocab else 300
    model = MarkovLM(markov_table(len(tokenizer), {word: {vocab[SPECIAL.open]: 9.0, word: 1.0},
                                                   vocab[SPECIAL.open]: {vocab["<|unsafe|>"]: 9.0},
                                                   vocab["<|unsafe|>"]: {vocab[SPECIAL.close]: 9.0},
                                                   vocab[SPECIAL.close]: {word: 9.0}}))
    prompt = [tokenizer.decode([word])]
    free = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=12)).generate(prompt)[0]
    attacked = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=12,
                                                      suppress=("reflection",))).generate(prompt)[0]
    assert free.flagged and free.text.endswith("<|unsafe|>")  # stopped on the label
    assert not attacked.flagged and SPECIAL.open not in attacked.text and attacked.finish_reason == "length"


def test_safe_beam_drops_the_tag_heavy_half_of_the_candidates():
    totals = torch.tensor([-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, -0.7, -0.8])
    tag_probability = torch.tensor([0.9, 0.8, 0.01, 0.7, 0.02, 0.6, 0.03, 0.04])
    chosen = safe_choice(totals, tag_probability, torch.ones(8, dtype=torch.bool), k=2, drop_fraction=0.5)
    assert chosen.tolist() == [2, 4]  # the two most likely among the four least tag-prone
    everything = safe_choice(totals, tag_probability, torch.ones(8, dtype=torch.bool), k=2, drop_fraction=0.0)
    assert everything.tolist() == [0, 1]


def test_safe_beam_steers_away_from_text_that_leads_into_the_tag(tokenizer):
    """From the prompt, four continuations: the two likeliest are usually followed by the harmful tag."""
    vocab = tokenizer.get_vocab()
    tag, stop = vocab[HARMFUL_TAG], vocab[END_OF_TEXT]
    start, a, b, c, d = 300, 301, 302, 303, 304
    model = MarkovLM(markov_table(len(tokenizer), {
        start: {a: 4.0, b: 3.5, c: 2.0, d: 1.5},
        a: {tag: 5.0, stop: 4.0}, b: {tag: 5.0, stop: 4.0}, c: {stop: 5.0}, d: {stop: 5.0}, tag: {stop: 5.0},
    }))
    prompt = tokenizer.decode([start])
    config = dict(beams=2, candidates=4, max_new_tokens=6)
    beam = Decoder(model, tokenizer, DecodeConfig(mode="beam", **config)).generate([prompt])[0]
    safe = Decoder(model, tokenizer, DecodeConfig(mode="safebeam", **config)).generate([prompt])[0]
    assert beam.text == tokenizer.decode([a, tag])  # the likeliest path writes the tag
    assert safe.text == tokenizer.decode([c]) and safe.finish_reason == "stop"


def test_beam_search_ranks_finished_answers_by_log_probability_per_token(tokenizer):
    """An answer that stops at once (log-prob -1.0 for one token) against a longer one (-1.5 for five tokens): raw
    sums pick the short answer, per-token scores (length_penalty 1, transformers' default) the long one."""
    stop = tokenizer.get_vocab()[END_OF_TEXT]
    start, a, b, c, d = 300, 301, 302, 303, 304
    model = MarkovLM(markov_table(len(tokenizer), {
        start: {stop: 5.0, a: 4.6}, a: {b: 9.0}, b: {c: 9.0}, c: {d: 9.0}, d: {stop: 9.0}}))
    prompt = tokenizer.decode([start])
    for mode in ("beam", "safebeam"):
        config = dict(mode=mode, beams=2, candidates=2, max_new_tokens=8, drop_fraction=0.0)
        short = Decoder(model, tokenizer, DecodeConfig(length_penalty=0.0, **config)).generate([prompt])[0]
        long = Decoder(model, tokenizer, DecodeConfig(**config)).generate([prompt])[0]
        assert short.text == "" and long.text == tokenizer.decode([a, b, c, d]), mode
        assert long.finish_reason == "stop"


@pytest.mark.parametrize("mode", ["beam", "safebeam"])
def test_searching_prompts_together_finds_what_each_finds_alone(random_llama, tokenizer, mode):
    """Prompts of different lengths share one KV cache; each prompt's beams, choices, limit and stop stay its own."""
    prefills, limits = ["", " so,", ""], [12, 4, 7]
    config = dict(mode=mode, beams=3, candidates=3, max_new_tokens=12)
    together = Decoder(random_llama, tokenizer, DecodeConfig(batch_size=3, **config)).generate(PROMPTS, prefills, limits)
    alone = [Decoder(random_llama, tokenizer, DecodeConfig(batch_size=1, **config | {"max_new_tokens": n})).generate(
        [prompt], [prefill])[0] for prompt, prefill, n in zip(PROMPTS, prefills, limits)]
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.finish_reason for g in together] == [g.finish_reason for g in alone]
    assert [g.new_tokens for g in together] == [g.new_tokens for g in alone]
    assert together[1].new_tokens <= 4


def test_safe_beam_dropping_nothing_is_beam_search(random_llama, tokenizer):
    """With N = k and no candidate dropped, Safe Beam must choose what beam search chooses: its lookahead over one
    unrepeated cache (each candidate seeing its beam's past, not its siblings) carries every beam's state intact."""
    config = dict(beams=3, candidates=3, max_new_tokens=12, batch_size=3)
    beam = Decoder(random_llama, tokenizer, DecodeConfig(mode="beam", **config)).generate(PROMPTS)
    safe = Decoder(random_llama, tokenizer, DecodeConfig(mode="safebeam", drop_fraction=0.0, **config)).generate(PROMPTS)
    assert [g.text for g in safe] == [g.text for g in beam]
    assert [g.new_tokens for g in safe] == [g.new_tokens for g in beam]


def llama(tokenizer, attention: str):
    torch.manual_seed(0)
    return LlamaForCausalLM._from_config(preset_config("tiny", len(tokenizer)), attn_implementation=attention).eval()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_safe_beam_lookahead_logits_are_those_of_each_candidate_alone(tokenizer, attention):
    model = llama(tokenizer, attention)
    decoder = Decoder(model, tokenizer, DecodeConfig(mode="safebeam"))
    ids = decoder.encode(PROMPTS, [""] * len(PROMPTS))  # different lengths: left padding under the tree mask
    logits, cache, mask, positions = decoder.prefill_cache(ids)
    candidates = logits.topk(4, dim=-1).indices
    with torch.inference_mode():
        look = lookahead(decoder, candidates, cache, mask, positions).view(len(ids), 4, -1)
        for row, prompt in enumerate(ids):
            for j, token in enumerate(candidates[row].tolist()):
                alone = model(torch.tensor([prompt + [token]])).logits[0, -1]
                torch.testing.assert_close(look[row, j], alone, atol=1e-4, rtol=1e-4)


def test_safe_beam_refuses_attention_that_takes_no_mask_of_its_own(tokenizer):
    model = llama(tokenizer, "sdpa")
    model.config._attn_implementation = "flash_attention_2"  # not installed here: only its name is read
    with pytest.raises(UserError, match="attn_implementation='sdpa'"):
        Decoder(model, tokenizer, DecodeConfig(mode="safebeam"))


def test_safe_beam_short_circuits_when_the_tag_is_generated(tokenizer):
    vocab = tokenizer.get_vocab()
    tag, stop = vocab[HARMFUL_TAG], vocab[END_OF_TEXT]
    start, a = 300, 301
    model = MarkovLM(markov_table(len(tokenizer), {start: {a: 5.0}, a: {tag: 9.0}, tag: {a: 9.0}}))
    safe = Decoder(model, tokenizer, DecodeConfig(mode="safebeam", beams=1, candidates=1, drop_fraction=0.0,
                                                  max_new_tokens=8)).generate([tokenizer.decode([start])])[0]
    assert safe.finish_reason == "harmful_tag" and safe.text == tokenizer.decode([a]) and HARMFUL_TAG not in safe.text


def test_bad_decode_settings_are_refused():
    with pytest.raises(ValueError, match="mode"):
        DecodeConfig(mode="nucleus")
    with pytest.raises(ValueError, match="suppress"):
        DecodeConfig(suppress=("everything",))


def _sentence_writer(tokenizer, verdict: str = "<|unsafe|>"):
    """A model that writes "give. give. ..." and never opens a reflection itself, but labels one it is given:
    after the opening marker it writes ``verdict`` and closes."""
    vocab = tokenizer.get_vocab()
    word, period = vocab["Ġgive"], vocab["."]
    return MarkovLM(markov_table(len(tokenizer), {word: {period: 9.0}, period: {word: 9.0},
                                                  vocab[SPECIAL.open]: {vocab[verdict]: 9.0},
                                                  vocab[verdict]: {vocab[SPECIAL.close]: 9.0},
                                                  vocab[SPECIAL.close]: {word: 9.0}})), word


@pytest.mark.parametrize("suppress", [(), ("reflection",)])
def test_reflect_every_asks_for_a_reflection_at_a_sentence_end_and_the_guard_reads_it(tokenizer, suppress):
    model, word = _sentence_writer(tokenizer)
    prompt = [tokenizer.decode([word])]
    unasked = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=16)).generate(prompt)[0]
    asked = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=16, reflect_every=4,
                                                   suppress=suppress)).generate(prompt)[0]
    assert not unasked.flagged and SPECIAL.open not in unasked.text
    assert asked.flagged and asked.finish_reason == "unsafe_reflection"
    # the marker comes at the first sentence end at least 4 tokens in: ". give. give." (5 tokens)
    assert asked.text.split(SPECIAL.open)[0] == ". give. give."


def test_reflect_every_is_refused_with_beam_search():
    with pytest.raises(ValueError, match="reflect_every"):
        DecodeConfig(mode="safebeam", reflect_every=8)
    with pytest.raises(ValueError, match="reflect_on_request"):
        DecodeConfig(mode="beam", reflect_on_request=True)


def test_reflect_on_request_asks_for_the_verdict_on_the_request_before_the_answer(tokenizer):
    model, word = _sentence_writer(tokenizer)
    prompt = [tokenizer.decode([word])]
    asked = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=16,
                                                   reflect_on_request=True)).generate(prompt)[0]
    assert asked.flagged and asked.stopped_at == len("<|reflect|><|unsafe|>")
    assert asked.text == "<|reflect|><|unsafe|>" and asked.reflections[0].start == 0


def test_reflect_on_request_lets_a_safe_verdict_answer_and_asks_nothing_under_a_prefill(tokenizer):
    model, word = _sentence_writer(tokenizer, verdict="<|safe|>")
    prompt = [tokenizer.decode([word])]
    answer = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=9,
                                                    reflect_on_request=True)).generate(prompt)[0]
    assert not answer.flagged and answer.text.startswith("<|reflect|><|safe|><|/reflect|> give.")
    assert [r.label for r in answer.reflections] == ["Safe"]
    attacked = Decoder(model, tokenizer, DecodeConfig(mode="guarded", max_new_tokens=6, reflect_on_request=True)
                       ).generate(prompt, prefills=[" give."])[0]
    assert SPECIAL.open not in attacked.text and attacked.text.startswith(" give.")


@pytest.mark.parametrize("settings", [
    {}, {"temperature": 1.0, "top_k": 20}, {"mode": "guarded", "reflect_every": 4, "reflect_on_request": True},
    {"mode": "guarded", "suppress": ("reflection", "tag")}, {"mode": "beam"}, {"mode": "safebeam"},
], ids=["greedy", "sampled", "guarded-asking", "suppressed", "beam", "safebeam"])
def test_every_tensor_fed_to_the_model_is_made_on_its_device(random_llama, tokenizer, settings, request):
    config = DecodeConfig(max_new_tokens=10, batch_size=2, **settings)
    on_cpu = Decoder(random_llama, tokenizer, config).generate(PROMPTS)
    request.getfixturevalue("meta_default_device")
    assert Decoder(random_llama, tokenizer, config).generate(PROMPTS) == on_cpu
