"""Reading and writing helpers."""

import random
from collections import Counter

import pytest

from safepretrain.io import reservoir_sample


def test_a_reservoir_sample_is_uniform_over_the_stream():
    counts = Counter()
    trials = 20_000
    for trial in range(trials):
        counts.update(reservoir_sample(iter(range(5)), 2, random.Random(trial)))
    # each of 5 items is in a sample of 2 with probability 2/5; 4 standard errors ~ 0.014
    assert sorted(counts) == [0, 1, 2, 3, 4]
    assert all(count / trials == pytest.approx(0.4, abs=0.015) for count in counts.values())


def test_a_short_stream_is_sampled_whole_and_a_seed_repeats_its_sample():
    assert reservoir_sample(iter("abc"), 10, random.Random(0)) == ["a", "b", "c"]
    assert reservoir_sample(range(1000), 5, random.Random(3)) == reservoir_sample(range(1000), 5, random.Random(3))
