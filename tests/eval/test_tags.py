"""The tag check: P(tag) where the data put one, and in harmful vs benign text, computed exactly."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from safepretrain.eval.tags import tag_calibration, write_tag_check
from safepretrain.markup import HARMFUL_TAG


class TagsAfterWord(torch.nn.Module):
    """A model whose only preference: the tag (logit 3) right after ``word``; every other logit is 0."""

    def __init__(self, vocab: int, tag_id: int, word_id: int):
        super().__init__()
        self.vocab, self.tag_id, self.word_id = vocab, tag_id, word_id
        self.device = torch.device("cpu")

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.tag_id] = torch.where(input_ids == self.word_id, 3.0, 0.0)
        return SimpleNamespace(logits=logits)


def test_tag_probabilities_match_a_hand_computation(tokenizer):
    tag_id = tokenizer.convert_tokens_to_ids(HARMFUL_TAG)
    word = "dose"  # one token at the start of a text
    [word_id] = tokenizer(word, add_special_tokens=False)["input_ids"]
    model = TagsAfterWord(len(tokenizer), tag_id, word_id)
    harmful = [f"{word}{HARMFUL_TAG} of the {word}"]
    benign = ["the cat sat"]
    result = tag_calibration(model, tokenizer, harmful, benign)

    high = math.e ** 3 / (math.e ** 3 + len(tokenizer) - 1)  # P(tag) after the word
    low = 1 / len(tokenizer)  # P(tag) anywhere else
    assert result.tag_logprob == pytest.approx(math.log(high), rel=1e-5)
    stripped = tokenizer(f"{word} of the {word}", add_special_tokens=False)["input_ids"]
    expected_harmful = sum(high if t == word_id else low for t in stripped) / len(stripped)
    assert result.harmful_p == pytest.approx(expected_harmful, rel=1e-5)
    assert result.benign_p == pytest.approx(low, rel=1e-5)
    assert result.harmful_to_benign > 1 and result.tag_rate == pytest.approx(1 / 5)


def test_a_model_without_the_tag_or_texts_without_tags_are_named(tokenizer):
    model = TagsAfterWord(len(tokenizer), 0, 0)
    with pytest.raises(ValueError, match="none of the 1 harmful texts holds"):
        tag_calibration(model, tokenizer, ["no tag here"], ["benign"])
    with pytest.raises(ValueError, match="not a tags model"):
        tag_calibration(model, tokenizer, ["x"], ["y"], tag="<|no-such-token|>")


def test_the_check_samples_streams_read_once_and_writes_its_numbers(tokenizer, tmp_path):
    tag_id = tokenizer.convert_tokens_to_ids(HARMFUL_TAG)
    [word_id] = tokenizer("dose", add_special_tokens=False)["input_ids"]
    model = TagsAfterWord(len(tokenizer), tag_id, word_id)
    harmful = (f"dose{HARMFUL_TAG} number {i}" for i in range(50))  # generators: a corpus streamed, not held
    benign = (f"the cat number {i}" for i in range(50))
    result = write_tag_check(model, tokenizer, harmful, benign, tmp_path / "check.json", texts=7, source="m")

    assert (result.harmful_texts, result.benign_texts) == (7, 7)
    written = json.loads((tmp_path / "check.json").read_text())
    assert written["model"] == "m" and written["tag_logprob"] == pytest.approx(result.tag_logprob)
