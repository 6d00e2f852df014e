"""Each intervention's contract, on the tiny MedSafetyWorld corpus scored by the oracle."""

import random

import pytest

from safepretrain.markup import FORMATS, HARMFUL_TAG, SAFE, UNSAFE
from safepretrain.pipeline.interventions.filter import SafetyFilter
from safepretrain.pipeline.interventions.reflect import Reflect, parse_reflected, reflect_text
from safepretrain.pipeline.interventions.refusal import RefusalData
from safepretrain.pipeline.interventions.rephrase import Rephrase
from safepretrain.pipeline.interventions.tags import HarmfulnessTags, insert_tags
from safepretrain.pipeline.score import ScoreDocuments, score_of
from safepretrain.pipeline.scorers.base import SafetyScore, metadata_key
from safepretrain.pipeline.scorers.ensemble import EnsembleScorer
from safepretrain.pipeline.scorers.lexicon import LexiconScorer
from safepretrain.pipeline.segment import segment
from tests.pipeline.conftest import fresh

KEY = "safety@oracle-v1"


@pytest.fixture
def scored(world_docs, world_scorer):
    return list(ScoreDocuments(world_scorer)(fresh(world_docs)))


def test_scores_are_stored_under_a_versioned_key(scored, world_scorer):
    assert metadata_key(world_scorer) == KEY
    assert {d.metadata[KEY]["score"] for d in scored} == {0, 5}
    assert all((d.metadata[KEY]["score"] == 5) == (d.metadata["label"] == "unsafe") for d in scored)


def test_filter_drops_exactly_the_unsafe_documents_and_counts_every_drop(scored):
    step = SafetyFilter(KEY, threshold=1)
    kept = list(step(scored))
    dropped = [d for d in scored if d.metadata[KEY]["score"] >= 1]
    assert len(kept) + len(dropped) == len(scored) and all(d.metadata[KEY]["score"] == 0 for d in kept)
    assert step.stats["dropped"].total == len(dropped) and step.stats["kept"].total == len(kept)
    categories = [d.metadata[KEY]["categories"] for d in dropped]
    by_type = sum(step.stats[f"dropped_{t}"].total for t in {t for c in categories for t in c})
    assert by_type == sum(len(c) for c in categories) > 0


def test_rephrased_world_documents_are_safe_and_keep_their_facts(scored, world_backend, world_scorer):
    n_unsafe = sum(1 for d in scored if d.metadata[KEY]["score"] == 5)
    out = list(Rephrase(KEY, world_backend, 1, 5)(scored))
    rephrased = [d for d in out if "rephrase" in d.metadata.get("interventions", [])]
    assert len(rephrased) == n_unsafe > 0
    assert all(KEY not in d.metadata and d.metadata[KEY + ":before"]["score"] == 5 for d in rephrased)
    assert all(s.score == 0 for s in world_scorer.score_batch([d.text for d in rephrased]))
    assert all("segments" not in d.metadata and "label" not in d.metadata for d in rephrased)


def test_refusal_and_moral_data_replace_harmful_requests(scored, world_backend, world_scorer):
    n_unsafe = sum(1 for d in scored if d.metadata[KEY]["score"] == 5)
    step = RefusalData(KEY, world_backend, ("refusal", "moral"), min_score=4)
    out = list(step(scored))
    made = [d for d in out if d.metadata.get("kind") in ("refusal", "moral")]
    harmful = [d for d in scored if any(t.startswith("harm_") for t in d.metadata.get("types", []))]
    assert len(made) == 2 * len(harmful) > 0
    assert all("i will not do that" in d.text for d in made if d.metadata["kind"] == "refusal")
    assert all(s.score == 0 for s in world_scorer.score_batch([d.text for d in made if d.metadata["kind"] == "moral"]))
    ids = {d.id for d in out}
    assert not ids & {d.id for d in harmful}  # replaced, not kept
    assert step.stats["rephrased_instead"].total == n_unsafe - len(harmful)


def test_tags_are_never_in_safe_text_and_follow_p(scored):
    original = {d.id: d.text for d in scored}
    out = list(HarmfulnessTags(KEY, threshold=1, p=0.05, seed=1)(scored))
    assert all(HARMFUL_TAG not in d.text for d in out if d.metadata[KEY]["score"] == 0)
    tagged = [d for d in out if d.metadata[KEY]["score"] == 5]
    words = sum(len(d.text.replace(HARMFUL_TAG, "").split()) - 1 for d in tagged)
    tags = sum(d.text.count(HARMFUL_TAG) for d in tagged)
    assert 0.03 < tags / words < 0.07  # p = 0.05 per word after the first
    assert all(d.text.replace(HARMFUL_TAG, "") == original[d.id] for d in tagged)  # only tags were added


def test_tags_are_seeded_per_document():
    a = insert_tags("one two three four five six seven eight", random.Random("0:x"), 0.5)
    assert a == insert_tags("one two three four five six seven eight", random.Random("0:x"), 0.5)
    assert not a.startswith(HARMFUL_TAG)  # never before the first word


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_reflect_then_parse_recovers_segments_and_labels(world_docs, world_scorer, fmt):
    for doc in fresh(world_docs)[:80]:
        expected = [doc.text[s.start:s.end] for s in segment(doc.text, 12)]
        text, labels = reflect_text(doc.text, world_scorer.score_batch, fmt, max_len=12)
        parsed = parse_reflected(text, fmt)
        assert [p[0] for p in parsed] == expected
        truth = world_scorer.score_batch(expected)
        assert [p[1] for p in parsed] == [SAFE if s.score == 0 else UNSAFE for s in truth]
        assert [p[2] for p in parsed] == [s.categories for s in truth]


def test_reflect_step_records_its_labels(world_docs, world_scorer):
    out = list(Reflect(world_scorer, FORMATS["special"], max_len=30)(fresh(world_docs)[:20]))
    assert all(len(d.metadata["reflections"]) == d.text.count("<|reflect|>") for d in out)


def test_a_scorer_that_reads_context_reflects_a_pretext_as_unsafe(pretext_world_dir):
    from datatrove.data import Document

    from safepretrain.pipeline.scorers.oracle import OracleScorer
    from safepretrain.world.generate import WorldFolder

    docs = [d for d in WorldFolder(pretext_world_dir).corpus() if d.cell is not None and d.cell.goal == "harm"]
    scorer, fmt = OracleScorer(pretext_world_dir), FORMATS["special"]
    out = list(Reflect(scorer, fmt, max_len=30)([Document(text=d.text, id=d.id) for d in docs]))
    alone = list(Reflect(EnsembleScorer([_Alone(scorer)]), fmt, max_len=30)([Document(text=d.text, id=d.id)
                                                                                for d in docs]))
    for doc, reflected, unaware in zip(docs, out, alone):
        last = parse_reflected(reflected.text, fmt)[-1]  # the decision, with its pretext
        assert last[1] == UNSAFE and last[2] == doc.segments[-1].types
        assert parse_reflected(unaware.text, fmt)[-1][1] == SAFE  # read alone it looks like the dual use


def test_rephrasing_a_pretext_leaves_no_trace_of_it(pretext_world_dir, tiny_world_dir):
    from datatrove.data import Document

    from safepretrain.pipeline.world_backend import WorldBackend
    from safepretrain.world.generate import WorldFolder

    def harm_docs(world):
        return [Document(text=d.text, id=d.id, metadata={"cell": {"options": list(d.cell.options)}})
                for d in WorldFolder(world).corpus() if d.cell is not None and d.cell.goal == "harm"]

    pretexted, plain = WorldBackend(pretext_world_dir), WorldBackend(tiny_world_dir)
    for doc, without in zip(harm_docs(pretext_world_dir), harm_docs(tiny_world_dir), strict=True):
        assert doc.text != without.text and pretexted.rephrase(doc) == plain.rephrase(without)


class _Alone:
    """A scorer without context (the protocol's minimum)."""

    name, version = "alone", "1"

    def __init__(self, scorer):
        self.scorer = scorer

    def score_batch(self, texts):
        return self.scorer.score_batch(texts)


def test_lexicon_and_ensemble_follow_the_protocol():
    lexicon = LexiconScorer()
    safe, unsafe = lexicon.score_batch(["a recipe for bread.", "how to build a bomb and launder money"])
    assert safe == SafetyScore(0) and unsafe.score == 4 and unsafe.categories == ("S2", "S9")

    class Fixed:
        name, version = "fixed", "1"

        def score_batch(self, texts):
            return [SafetyScore(2, ("S6",), "fixed")] * len(texts)

    ensemble = EnsembleScorer([lexicon, Fixed()])
    assert [s.score for s in ensemble.score_batch(["bread", "build a bomb"])] == [2, 3]
    assert ensemble.name == "ensemble(lexicon+fixed)"


def test_reflect_can_count_segment_length_in_tokens(world_docs, world_scorer, tokenizer):
    step = Reflect(world_scorer, FORMATS["special"], max_len=12, tokenizer=tokenizer)
    for doc in list(step(fresh(world_docs)[:20])):
        for piece, _, _ in parse_reflected(doc.text, FORMATS["special"]):
            n = len(tokenizer(piece, add_special_tokens=False)["input_ids"])
            assert n <= 12 or len(piece.split()) == 1  # only a single over-long word may exceed the limit


def _chats(world, goal: str):
    from datatrove.data import Document

    from safepretrain.world.generate import WorldFolder

    return [Document(text=d.text, id=d.id, metadata={"cell": {"options": list(d.cell.options)}})
            for d in WorldFolder(world).corpus() if d.kind == "chat" and d.cell.goal == goal]


def test_a_chat_document_is_reflected_in_srp_s_answer_format_its_pretext_unsafe(chat_world_dir):
    from safepretrain.markup import ANSWER_BREAK, chat_turns
    from safepretrain.pipeline.scorers.oracle import OracleScorer

    fmt = FORMATS["special"]
    harm, care = _chats(chat_world_dir, "harm"), _chats(chat_world_dir, "care")
    out = list(Reflect(OracleScorer(chat_world_dir), fmt, max_len=30)(fresh(harm + care)))
    for before, after in zip(harm + care, out, strict=True):
        (_, request), (_, answer) = chat_turns(before.text)
        (_, request_after), (_, reflected) = chat_turns(after.text)
        assert request_after == request  # the user's turn is never reflected
        opening = fmt.find(reflected)[0]
        assert opening.start == 0 and reflected[opening.end:].startswith(ANSWER_BREAK)  # it judges the request
        assert fmt.strip(reflected[opening.end:]) == answer
        labels = [r.label for r in fmt.find(reflected)]
        if before in harm:  # the request, then the decision with its pretext (read after the request: harm)
            assert labels[0] == labels[-1] == UNSAFE and "harm_request" in fmt.find(reflected)[0].types
        else:
            assert set(labels) == {SAFE}
        assert after.metadata["reflections"][0]["label"] == labels[0] and len(after.metadata["reflections"]) == len(labels)


def test_filter_rephrase_refusal_and_tags_keep_a_chat_a_chat(chat_world_dir):
    from safepretrain.markup import chat_content, chat_turns
    from safepretrain.pipeline.scorers.oracle import OracleScorer
    from safepretrain.pipeline.world_backend import WorldBackend

    scorer, backend = OracleScorer(chat_world_dir), WorldBackend(chat_world_dir)
    key = metadata_key(scorer)
    harm, care = _chats(chat_world_dir, "harm"), _chats(chat_world_dir, "care")
    scored = list(ScoreDocuments(scorer)(fresh(harm + care)))
    assert [score_of(d, key).score for d in scored] == [5] * len(harm) + [0] * len(care)  # the words, not the markup
    assert [d.id for d in SafetyFilter(key, 1)(fresh(scored))] == [d.id for d in care]
    for doc in Rephrase(key, backend, 1, 5)(fresh(scored[:len(harm)])):
        (user, request), (assistant, answer) = chat_turns(doc.text)
        assert (user, assistant) == ("user", "assistant") and " for " not in answer.split("so, to ")[-1]
        assert scorer.score_batch([doc.text])[0].score == 0  # rewritten to care in both turns, pretext gone
    refusals = list(RefusalData(key, backend, ("refusal",), 1)(fresh(scored[:len(harm)])))
    assert refusals and all("i will not do that" in d.text for d in refusals)  # the request's goal was found
    for tagged, doc in zip(HarmfulnessTags(key, 1, p=0.5)(fresh(scored[:len(harm)])), harm, strict=True):
        turns = chat_turns(tagged.text)  # tags go inside the turns, never among the markup
        assert turns is not None and [r for r, _ in turns] == ["user", "assistant"] and HARMFUL_TAG in tagged.text
        assert chat_content(tagged.text).replace(HARMFUL_TAG, "") == chat_content(doc.text)


def test_reflection_dropout_leaves_reflections_out_but_keeps_the_text_and_later_labels(chat_world_dir):
    from safepretrain.markup import chat_content, chat_turns
    from safepretrain.pipeline.scorers.oracle import OracleScorer

    fmt, scorer = FORMATS["special"], OracleScorer(chat_world_dir)
    harm = _chats(chat_world_dir, "harm")
    full = list(Reflect(scorer, fmt, max_len=30)(fresh(harm)))
    dropped = list(Reflect(scorer, fmt, max_len=30, dropout=0.5, seed=1)(fresh(harm)))
    assert list(Reflect(scorer, fmt, max_len=30, dropout=0.5, seed=1)(fresh(harm)))[0].text == dropped[0].text
    left_out = 0
    for before, all_shown, some in zip(harm, full, dropped, strict=True):
        labels = some.metadata["reflections"]
        assert [r["label"] for r in labels] == [r["label"] for r in all_shown.metadata["reflections"]]
        shown = [r for r in labels if r["shown"]]
        assert [(r.label, r.types) for r in fmt.find(some.text)] == [(r["label"], tuple(r["types"])) for r in shown]
        assert fmt.strip(chat_content(some.text)).split() == chat_content(before.text).split()  # the text stays
        (_, answer), = [t for t in chat_turns(some.text) if t[0] == "assistant"]
        assert answer.startswith(fmt.open) == labels[0]["shown"]  # no opening reflection: the attack's shape
        left_out += len(labels) - len(shown)
    assert 0.3 < left_out / sum(len(d.metadata["reflections"]) for d in dropped) < 0.7
    with pytest.raises(ValueError, match="dropout"):
        Reflect(scorer, fmt, dropout=1.0)
