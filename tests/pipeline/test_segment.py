"""SRP segmentation: whole sentences packed up to a maximum length, over-long sentences hard-chunked, nothing lost."""

from hypothesis import given, settings
from hypothesis import strategies as st

from safepretrain.pipeline.segment import segment, sentence_spans, word_count

word = st.text(alphabet="abcdefg", min_size=1, max_size=6)
sentence = st.builds(lambda ws, end: " ".join(ws) + end, st.lists(word, min_size=1, max_size=12),
                     st.sampled_from([".", "?", "!", "\n", "。"]))
texts = st.lists(sentence, min_size=1, max_size=12).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(text=texts, max_len=st.integers(1, 15))
def test_segments_keep_every_word_in_order_within_the_limit(text, max_len):
    spans = segment(text, max_len)
    pieces = [text[s.start:s.end] for s in spans]
    assert " ".join(pieces).split() == text.split()
    assert all(word_count(p) <= max_len for p in pieces)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_sentences_that_fit_are_never_cut(text):
    sentences = {(s.start, s.end) for s in sentence_spans(text)}
    for span in segment(text, 100):
        inside = [s for s in sentences if span.start <= s[0] and s[1] <= span.end]
        assert inside and span.start == min(a for a, _ in inside) and span.end == max(b for _, b in inside)


def test_packing_and_hard_chunking():
    text = "One two three. Four five six seven!\nEight? Nine ten eleven twelve thirteen fourteen fifteen. 你好。再见！"
    assert [text[s.start:s.end] for s in segment(text, 5)] == [
        "One two three.", "Four five six seven!\nEight?", "Nine ten eleven twelve thirteen",
        "fourteen fifteen. 你好。再见！"]
