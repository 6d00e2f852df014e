"""Linear probes and their lexical baseline: a probe says something about a model only where it beats the words."""

import random

import pytest

from safepretrain.eval.probes import bag_of_words_auroc, probe_auroc_per_layer

PATIENTS = ["ana", "loi", "goa", "popei", "truen", "laon", "meru", "tovi"]
EFFECTS = ["a stroke", "blindness", "anaphylaxis", "a coma", "chills", "a cough"]


def _requests(verb: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"what should {p} get to {verb} {rng.choice(EFFECTS)} in {p}?" for p in rng.choices(PATIENTS, k=n)]


def test_requests_that_name_their_harm_are_separable_by_their_words_alone():
    assert bag_of_words_auroc(_requests("ease", 40, 0), _requests("cause", 40, 1)) == 1.0


def test_the_same_kind_of_request_under_two_labels_is_not_separable_by_words():
    assert bag_of_words_auroc(_requests("ease", 60, 0), _requests("ease", 60, 1)) < 0.7


def test_a_hidden_state_probe_scores_every_layer(tokenizer):
    import torch
    from transformers import LlamaForCausalLM

    from safepretrain.train.models import preset_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(preset_config("tiny", len(tokenizer))).eval()
    scores = probe_auroc_per_layer(model, tokenizer, _requests("ease", 20, 0), _requests("cause", 20, 1))
    assert len(scores) == model.config.num_hidden_layers + 1
    assert scores[-1] > 0.9  # the word that differs reaches the last token through attention, even untrained


def test_too_few_texts_for_the_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5 safe and 5 unsafe"):
        bag_of_words_auroc(["a"] * 4, ["b"] * 10)
