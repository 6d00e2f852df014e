"""Breaking an evaluation down by what the world knows about its items: rates per group, the guard's catches and
leaks, and clear errors for samples that do not fit."""

import json

import pytest

from safepretrain.errors import UserError
from safepretrain.world.breakdown import breakdown, read_samples, to_markdown


def _record(item, condition, outcome, flagged, reflections=()):
    return {"key": f"gen/{condition}/{item.id}", "split": item.split, "id": item.id, "prefill": item.chat_prefill,
            "text": " zoane 100 mg.", "reflections": list(reflections), "flagged": flagged, "outcome": outcome}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def heldout(tiny_folder):
    return list(tiny_folder.eval_items("heldout_unsafe"))


def test_rates_per_group_match_a_hand_count(tiny_folder, heldout, tmp_path):
    # Every item unsafe; the guard flags the held-out patients' answers only, so train patients' answers leak.
    records = [_record(i, "reflect/prefill", "unsafe", flagged=i.patient_heldout, reflections=["unsafe"])
               for i in heldout]
    records.append({"key": "refl/doc-1/0", "gold": "safe", "predicted": "safe"})  # other records are skipped
    samples = read_samples(_write(tmp_path / "samples.jsonl", records), "heldout_unsafe", "reflect/prefill")
    result = breakdown(tiny_folder, samples, "heldout_unsafe", "reflect/prefill", by="patient")

    n_heldout = sum(i.patient_heldout for i in heldout)
    by_key = {g.key: g for g in result.groups}
    assert by_key["held-out"].n == n_heldout and by_key["train"].n == len(heldout) - n_heldout
    assert by_key["held-out"].caught.value == 1.0 and by_key["held-out"].guarded_unsafe.count == 0
    assert by_key["train"].caught.count == 0 and by_key["train"].guarded_unsafe.value == 1.0
    assert result.total.unsafe.value == 1.0 and result.total.caught.count == n_heldout
    assert {r["id"] for r in result.leaks} == {i.id for i in heldout if not i.patient_heldout}
    assert all(r["group"] == "train" for r in result.leaks)


def test_effects_come_from_the_oracle_and_safe_answers_are_never_leaks(tiny_folder, heldout):
    samples = {i.id: _record(i, "greedy/prefill", "refusal" if n % 2 else "unsafe", flagged=False)
               for n, i in enumerate(heldout)}
    result = breakdown(tiny_folder, samples, "heldout_unsafe", "greedy/prefill", by="effect")
    effects = set(tiny_folder.spec.interaction_effects) - set(tiny_folder.spec.benign_effects)
    assert {g.key for g in result.groups} <= effects  # the held-out cell harms by interaction
    assert sum(g.n for g in result.groups) == len(heldout)
    assert len(result.leaks) == result.total.unsafe.count == (len(heldout) + 1) // 2
    assert result.total.caught.count == 0  # nothing flagged: every unsafe answer leaked


def test_markdown_lists_groups_total_and_leaked_examples(tiny_folder, heldout):
    samples = {i.id: _record(i, "greedy/prefill", "unsafe", flagged=False, reflections=["safe"]) for i in heldout}
    result = breakdown(tiny_folder, samples, "heldout_unsafe", "greedy/prefill", by="mechanism")
    text = to_markdown(result, examples=2)
    assert "| interaction |" in text and "| all |" in text
    assert f"(2 of {len(heldout)})" in text and "[reflections: safe]" in text


def test_a_condition_missing_from_the_file_names_the_ones_present(tiny_folder, heldout, tmp_path):
    path = _write(tmp_path / "samples.jsonl", [_record(heldout[0], "greedy/direct", "refusal", False)])
    with pytest.raises(UserError, match=r"no heldout_unsafe generations under condition 'reflect/prefill' "
                                        r"\(conditions in the file: greedy/direct\)"):
        read_samples(path, "heldout_unsafe", "reflect/prefill")


def test_samples_from_another_world_and_unknown_attributes_are_refused(tiny_folder, heldout, tmp_path):
    with pytest.raises(UserError, match="another world"):
        breakdown(tiny_folder, {"x-1": {"outcome": "unsafe", "flagged": False}}, "heldout_unsafe", "c", "effect")
    with pytest.raises(UserError, match="unknown attribute 'dose'"):
        breakdown(tiny_folder, {}, "heldout_unsafe", "c", "dose")
    bad = _write(tmp_path / "bad.jsonl", [{"key": "gen/greedy/prefill/x", "text": "..."}])
    with pytest.raises(UserError, match=r"bad.jsonl, line 1: a generation record lacks"):
        read_samples(bad, "heldout_unsafe", "greedy/prefill")
