"""Tokenizers keep the toolkit's markup as single tokens; every model preset instantiates with its documented shape."""

import random

import pytest
import torch

from safepretrain.markup import HARMFUL_TAG, SAFE, SPECIAL, SPECIAL_TOKENS, UNSAFE, reflect_segments
from safepretrain.pipeline.interventions.tags import insert_tags
from safepretrain.train.models import PRESETS, count_parameters, preset_config


def test_special_tokens_are_single_ids(tokenizer):
    for token in SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids) == [token]


def test_text_with_markup_round_trips(tokenizer):
    text = f"give nelael vokeor 900 mg. {SPECIAL.render(UNSAFE, ['harm_overdose'])} then"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<|reflect|>") in ids


@pytest.mark.parametrize("marked", [insert_tags("relieve chills in daboe", random.Random(0), p=1.0),
                                    reflect_segments([("give vokeor 900 mg.", SAFE, ())], SPECIAL)])
def test_markup_follows_its_word_with_no_lone_space_token_between(tokenizer, marked):
    # A lone space token before the marker would carry the decision to write it, and P(marker | previous word) --
    # what Safe Beam's lookahead and an asked reflection read -- would say nothing.
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(marked, add_special_tokens=False)["input_ids"])
    markers = [i for i, t in enumerate(tokens) if t in (HARMFUL_TAG, SPECIAL.open)]
    assert markers and all(tokenizer.convert_tokens_to_string(tokens[i - 1:i]).strip() for i in markers)


def test_chat_template_renders_roles_and_generation_prompt(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "<|user|>\nhi<|end|>\n<|assistant|>\nok<|end|>\n"
    assert tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|assistant|>\n")


def test_a_chat_document_is_written_as_the_chat_template_writes_it_and_read_back(tokenizer):
    from safepretrain.markup import chat_content, chat_turns, render_chat

    turns = [("user", "what should ana get?\noptions: a or b."), ("assistant", "check a. give ana a.")]
    text = render_chat(turns)
    assert text == tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=False)
    assert chat_turns(text) == turns and chat_content(text) == "what should ana get?\noptions: a or b. check a. give ana a."
    for not_a_chat in ("check a. give ana a.", "note: " + text, text + "more", text[:-1]):
        assert chat_turns(not_a_chat) is None and chat_content(not_a_chat) == not_a_chat


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_instantiates(name):
    from transformers import LlamaForCausalLM

    config = preset_config(name, vocab_size=1024)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert model.config.num_hidden_layers == config.num_hidden_layers


@pytest.mark.parametrize("name, millions", [("135m", 134.5), ("360m", 361.8), ("1.7b", 1711.4)])
def test_smollm2_presets_match_the_released_parameter_counts(name, millions):
    assert count_parameters(preset_config(name, 49_152)) / 1e6 == pytest.approx(millions, abs=0.1)


def test_small_presets_fit_their_roles():
    assert 0.5e6 < count_parameters(preset_config("tiny", 1024)) < 1.5e6  # ~1M: CPU tests
    assert 7e6 < count_parameters(preset_config("small", 1024)) < 13e6  # ~10M: the laptop demo
    paper = preset_config("50m", 1024)
    assert (paper.num_hidden_layers, paper.hidden_size, paper.num_attention_heads, paper.num_key_value_heads,
            paper.intermediate_size, paper.max_position_embeddings) == (24, 256, 8, 4, 1024, 512)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="tiny, small, 50m"):
        preset_config("huge", 1024)
