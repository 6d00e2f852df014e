"""The reflection format: what is rendered parses back, in both spellings."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safepretrain.markup import FORMATS, LABELS, SAFE, UNSAFE, after_unsafe_spans, reflect_segments

words = st.text(alphabet="abcdefghij .,", min_size=1, max_size=30).map(str.strip).filter(bool)
types = st.lists(st.sampled_from(["harm_overdose", "error_interaction", "S1"]), max_size=2, unique=True)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@given(segments=st.lists(st.tuples(words, st.sampled_from(LABELS), types), min_size=1, max_size=5))
def test_rendered_reflections_parse_back(fmt, segments):
    text = reflect_segments(segments, fmt)
    found = fmt.find(text)
    assert [r.label for r in found] == [label for _, label, _ in segments]
    assert [r.types for r in found] == [() if label == SAFE else tuple(t) for _, label, t in segments]
    assert fmt.strip(text) == " ".join(t for t, _, _ in segments)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_after_unsafe_spans_cover_only_text_after_an_unsafe_reflection(fmt):
    text = reflect_segments([("a b.", SAFE, ()), ("c d.", UNSAFE, ("harm",)), ("e f.", SAFE, ()),
                             ("g.", UNSAFE, ())], fmt)
    spans = [text[a:b] for a, b in after_unsafe_spans(text, fmt)]
    assert spans == [" e f." + fmt.joiner]  # the last Unsafe reflection ends the text: nothing follows it


def test_plain_format_is_the_srp_public_one():
    assert FORMATS["plain"].render(SAFE) == "<think> Safe </think>"
    assert FORMATS["plain"].render(UNSAFE, ["Violent"]) == "<think> Unsafe: Violent </think>"


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="unknown reflection label"):
        FORMATS["special"].render("Maybe")


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_a_reflection_is_decided_by_its_label_closed_or_not(fmt):
    closed = fmt.reflected("give meil 300 mg.", SAFE)
    text = f"{closed} {fmt.open}{dict(fmt.label_tokens)[UNSAFE]}"  # the model stopped right after the label
    first, second = fmt.decisions(text)
    assert (first.label, first.end) == (SAFE, len(closed)) and fmt.find(text) == [first]
    assert (second.label, second.end, second.types) == (UNSAFE, len(text), ())
    assert fmt.decisions(fmt.opened("give goa 900 mg.")) == []  # opened, no label yet: nothing decided
