"""The exact rewriter: always safe, and every fact of the original is still stated."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from safepretrain.world.config import MECHANISMS
from safepretrain.world.corpus import episode_document
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.language import Check, Fact
from safepretrain.world.rewrite import WorldRewriter
from safepretrain.world.templates import INDICATIONS

UNSAFE_CELLS = [(g, m) for g in ("harm", "error") for m in MECHANISMS]


@settings(max_examples=150, deadline=None)
@given(cell=st.sampled_from(UNSAFE_CELLS), seed=st.integers(0, 100_000),
       context=st.sampled_from(["note", "qa", "dialogue", "narrative"]))
def test_a_rewrite_is_always_safe_and_keeps_the_facts(world, oracle, labeler, sampler, cell, seed, context):
    goal, mechanism = cell
    rng = random.Random(seed)
    feasible = sampler.feasible_patients(mechanism, list(world.patients))
    doc = episode_document("d", sampler.sample(rng, goal, mechanism, context, rng.choice(feasible)), labeler)
    assert doc.label == "unsafe"

    rewritten = WorldRewriter(labeler).rewrite(doc)

    assert rewritten.label == "safe" and all(s.label == "safe" for s in rewritten.segments)
    assert all(oracle.label_segment(s.text).label == "safe" for s in rewritten.segments)  # re-derived, not stored
    facts = lambda d: {s for seg in d.segments for s in oracle.grammar.parse(seg.text) if isinstance(s, (Fact, Check))}
    assert facts(doc) <= facts(rewritten)
    harmful = next(o for o in doc.cell.options if not oracle.is_safe(doc.cell.patient, *_drug_dose(o)))
    effects = {h.effect for h in oracle.harms(doc.cell.patient, *_drug_dose(harmful))}
    assert all(any(e in s.text and "would harm" in s.text for s in rewritten.segments) for e in effects)


def test_safe_documents_are_unchanged(tiny_folder, labeler):
    rewriter = WorldRewriter(labeler)
    doc = next(d for d in tiny_folder.corpus() if d.label == "safe" and d.kind == "episode")
    assert rewriter.rewrite(doc) is doc


def _drug_dose(option: str):
    drug, dose, _ = option.split(" ")
    return drug, int(dose)


def test_a_pretext_is_rewritten_as_the_harmful_goal_it_dresses_up(pretext_world_dir, tiny_world_dir):
    from safepretrain.world.generate import WorldFolder

    pretexted, plain = WorldFolder(pretext_world_dir), WorldFolder(tiny_world_dir)
    rewriter = WorldRewriter(SegmentLabeler(pretexted.oracle))
    harm = [(a, b) for a, b in zip(pretexted.corpus(), plain.corpus()) if a.cell is not None and a.cell.goal == "harm"]
    for doc, without in harm:
        rewritten = rewriter.rewrite(doc)
        assert rewritten.label == "safe" and not any(i in rewritten.text for i in INDICATIONS)
        assert rewritten.text == rewriter.rewrite(without).text  # the pretext leaves no trace


def test_a_chat_is_rewritten_turn_by_turn_and_stays_a_labeled_chat(chat_world_dir):
    from safepretrain.markup import chat_turns
    from safepretrain.world.generate import WorldFolder

    folder = WorldFolder(chat_world_dir)
    rewriter = WorldRewriter(SegmentLabeler(folder.oracle))
    chats = [c for c in folder.corpus() if c.kind == "chat" and c.label == "unsafe"]
    assert any(i in c.text for c in chats for i in INDICATIONS)  # pretexts, which read as harm only after the request
    for chat in chats:
        rewritten = rewriter.rewrite(chat)
        assert rewritten.kind == "chat" and rewritten.label == "safe" and rewritten.cell == chat.cell
        assert [role for role, _ in chat_turns(rewritten.text)] == ["user", "assistant"]
        assert all(rewritten.text[s.start:s.end] == s.text for s in rewritten.segments)  # offsets into the chat
        assert all(folder.oracle.label_segment(s.text).label == "safe" for s in rewritten.segments)
        assert not any(i in rewritten.text for i in INDICATIONS)
        assert rewriter.rewrite_text(chat.text, list(chat.cell.options)) == rewritten.text
