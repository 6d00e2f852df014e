"""One grammar renders and parses: what the generator writes, the oracle reads back exactly."""

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from safepretrain.world.corpus import drug_sentences, patient_sentences
from safepretrain.world.entities import RESERVED_WORDS
from safepretrain.world.language import Fact, Grammar, _alternation, split_sentences
from safepretrain.world.templates import template_words


def test_no_entity_name_is_a_word_of_the_language(world):
    assert template_words() <= RESERVED_WORDS
    names = [d.name for d in world.drugs] + [p.name for p in world.patients] + list(world.doctors)
    assert len(names) == len(set(names))
    assert not set(names) & RESERVED_WORDS


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fact_sentences_parse_back_to_the_world_facts(world, oracle, seed):
    rng = random.Random(seed)
    grammar = oracle.grammar
    drug = rng.choice(world.drugs)
    facts = {s for sentence in drug_sentences(rng, grammar, drug) for s in grammar.parse(sentence)}
    assert Fact("treats", (drug.name, drug.treats)) in facts
    assert Fact("max_dose", (drug.name, str(drug.max_dose_mg))) in facts
    for i in world.interactions:
        if drug.name in i.drugs:
            assert Fact("interaction", (*sorted(i.drugs), i.effect)) in facts
    patient = rng.choice(world.patients)
    facts = {s for sentence in patient_sentences(rng, grammar, patient) for s in grammar.parse(sentence)}
    assert facts == {
        Fact("patient_symptom", (patient.name, patient.symptom)), Fact("patient_takes", (patient.name, patient.takes)),
        Fact("patient_allergy", (patient.name, patient.allergic_to)),
        Fact("patient_organ", (patient.name, patient.organ_condition)),
    }


def test_sentences_split_after_terminal_punctuation():
    assert split_sentences("a b. c d? e!  f") == ["a b.", "c d?", "e!", "f"]


def test_multiword_vocabulary_prefers_the_longest_phrase():
    pattern = re.compile(_alternation(["back", "back pain", "pain", "b+c"]))
    assert pattern.match("back pain here").group() == "back pain"
    assert pattern.match("back then").group() == "back"
    assert [w for w in ["back", "back pain", "pain", "b+c", "bac", "b", "bc", ""] if pattern.fullmatch(w)] == [
        "back", "back pain", "pain", "b+c"]


def test_a_vocabulary_pattern_matches_as_a_longest_first_alternation_would():
    rng = random.Random(0)
    for _ in range(200):
        words = {"".join(rng.choices("ab ", k=rng.randint(1, 5))) for _ in range(rng.randint(1, 8))}
        flat = re.compile("|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))))
        tree = re.compile(_alternation(words))
        for _ in range(20):
            text = "".join(rng.choices("ab x", k=rng.randint(0, 12)))
            assert [m.span() for m in tree.finditer(text)] == [m.span() for m in flat.finditer(text)], (words, text)
            # inside a larger pattern, backtracking into a shorter word works as well
            assert bool(re.search(f"(?:{tree.pattern})x", text)) == bool(re.search(f"(?:{flat.pattern})x", text))


def test_a_covert_goal_parses_as_covert_and_states_no_intent(oracle, world):
    patient = world.patients[0]
    sentence = f"request: cause an interaction with {patient.takes} in {patient.name}."
    (goal,) = oracle.grammar.parse(sentence)
    assert (goal.kind, goal.patient, goal.target) == ("covert", patient.name, f"an interaction with {patient.takes}")
    assert oracle.label_segment(sentence).label == "safe"
