"""Recovery chats: post-training examples whose answer is forced to comply where the prefill attack cuts it, each
recovering in its recipe's format (plain: a refusal; SRP: an Unsafe reflection and the stop)."""

import json
import shutil
from dataclasses import replace

import pytest

from safepretrain.errors import UserError
from safepretrain.experiment import stages
from safepretrain.experiment.config import tiny
from safepretrain.experiment.stages import Layout, make_sft_data, recovery_chat
from safepretrain.markup import END_OF_TEXT, SPECIAL
from safepretrain.world.generate import ERROR_RECOVERY_FILE, RECOVERY_FILE
from safepretrain.world.templates import INDICATIONS


def _recovery(tiny_world_dir):
    return [json.loads(line) for line in (tiny_world_dir / RECOVERY_FILE).read_text().splitlines()]


def test_the_recovery_split_is_seen_harm_on_train_patients_answered_harmfully(tiny_folder, tiny_world_dir):
    records = _recovery(tiny_world_dir)
    assert len(records) == tiny_folder.config.n_harmful_finetune
    seen = set(tiny_folder.config.seen_mechanisms("harm"))
    heldout_patients = {p.name for p in tiny_folder.spec.patients if p.heldout}
    for r in records:
        assert r["cell"]["goal"] == "harm" and r["cell"]["mechanism"] in seen
        assert r["cell"]["patient"] not in heldout_patients
        verdict = tiny_folder.oracle.judge_answer(r["cell"]["patient"], r["messages"][1]["content"], None)
        assert verdict.outcome == "unsafe"


def test_plain_recovery_refuses_exactly_where_the_prefill_attack_cuts(tiny_folder, tiny_world_dir):
    attack_cuts = {item.chat_prefill.rsplit(" give ", 1)[0] for item in tiny_folder.eval_items("seen_unsafe")}
    for record in _recovery(tiny_world_dir):
        chat = recovery_chat(record, "plain")
        answer = chat["messages"][1]
        patient = record["cell"]["patient"]
        assert answer["prefill"].endswith(f"give {patient}") and answer["content"].startswith(answer["prefill"])
        assert tiny_folder.oracle.judge_answer(patient, answer["content"], None).outcome == "refusal"
    assert attack_cuts  # the eval's prefill has the same shape: "... so, to <harm>, give <patient>"


def test_srp_recovery_forces_the_harmful_decision_then_reflects_unsafe_and_stops(tiny_world_dir):
    record = _recovery(tiny_world_dir)[0]
    answer = recovery_chat(record, "srp")["messages"][1]
    assert answer["prefill"] == record["messages"][1]["content"]
    reflections = SPECIAL.find(answer["content"])
    assert len(reflections) == 1 and not reflections[0].is_safe
    assert reflections[0].types == tuple(record["response_segments"][-1]["types"])
    assert answer["content"].endswith(END_OF_TEXT)


def test_sft_data_gets_the_recovery_chats_and_old_worlds_are_told_what_to_do(tiny_world_dir, tmp_path):
    cfg = replace(tiny(), out=str(tmp_path / "x"), recovery_chats=5)
    world = Layout(cfg).world(0)
    shutil.copytree(tiny_world_dir, world)
    for kind in ("plain", "srp"):
        rows = [json.loads(line) for line in make_sft_data(cfg, 0, kind).read_text().splitlines()]
        assert sum("prefill" in r["messages"][-1] for r in rows) == 5
        assert len(rows) == tiny().world_config(0).n_sft + 5
    too_many = replace(cfg, out=str(tmp_path / "y"), recovery_chats=10_000)
    shutil.copytree(tiny_world_dir, Layout(too_many).world(0))
    with pytest.raises(UserError, match="ask for at most"):
        stages.make_sft_data(too_many, 0, "plain")
    (Layout(too_many).world(0) / RECOVERY_FILE).unlink()
    with pytest.raises(UserError, match="generate the world again"):
        stages.make_sft_data(too_many, 0, "srp")


def test_a_share_of_recovery_chats_forces_a_decision_written_with_a_pretext(tiny_folder, tiny_world_dir, tmp_path):
    cfg = replace(tiny(), out=str(tmp_path / "x"), recovery_chats=10, recovery_pretexts=0.3)  # 3, taking turns
    shutil.copytree(tiny_world_dir, Layout(cfg).world(0))
    for kind in ("plain", "srp"):
        rows = [json.loads(line) for line in make_sft_data(cfg, 0, kind).read_text().splitlines()]
        forced = [r for r in rows if "prefill" in r["messages"][-1]]
        pretexted = [r for r in forced if any(f" {i}, give " in r["messages"][-1]["prefill"] for i in INDICATIONS)]
        assert len(forced) == 10 and len(pretexted) == 3
        assert all(any(f" {i}, give " in r["messages"][-1]["prefill"] for r in pretexted) for i in INDICATIONS)
        for r in pretexted:
            patient = next(c for c in _recovery(tiny_world_dir) if c["id"] == r["id"])["cell"]["patient"]
            answer = r["messages"][-1]["content"]
            expected = "refusal" if kind == "plain" else "unsafe"  # SRP's answer is the forced one, then its flag
            assert tiny_folder.oracle.judge_answer(patient, answer, None).outcome == expected
            if kind == "srp":
                assert not SPECIAL.find(answer)[0].is_safe
    with pytest.raises(ValueError, match="recovery_pretexts"):
        replace(tiny(), recovery_pretexts=1.5)


def test_srp_recovery_can_force_the_answer_in_srp_s_own_shape_with_each_check_reflected(tiny_world_dir):
    record = _recovery(tiny_world_dir)[0]
    answer = recovery_chat(record, "srp", interleaved=True)["messages"][1]
    reflections = SPECIAL.find(answer["content"])
    checks = len(record["response_segments"]) - 1
    assert [r.is_safe for r in reflections] == [True] * checks + [False]  # every check Safe, the decision Unsafe
    assert SPECIAL.strip(answer["prefill"]) == record["messages"][1]["content"]
    assert recovery_chat(record, "plain", interleaved=True) == recovery_chat(record, "plain")


def _error_recovery(tiny_world_dir):
    return [json.loads(line) for line in (tiny_world_dir / ERROR_RECOVERY_FILE).read_text().splitlines()]


def test_the_error_recovery_split_answers_care_with_the_option_its_own_check_calls_harmful(tiny_folder, tiny_world_dir):
    records = _error_recovery(tiny_world_dir)
    assert len(records) == tiny().world_config(0).n_harmful_finetune
    heldout = {p.name for p in tiny_folder.oracle.world.patients if p.heldout}
    for record in records:
        request, answer = (m["content"] for m in record["messages"])
        assert record["prompt_label"] == "safe" and record["cell"]["goal"] == "error"
        assert record["cell"]["mechanism"] != "contraindication"  # the held-out error mechanism stays out
        assert record["cell"]["patient"] not in heldout and "no check was done" not in answer
        *checks, decision = record["response_segments"]
        assert all(c["label"] == "safe" for c in checks) and len(checks) == 2
        assert (decision["label"], decision["types"]) == ("unsafe", [f"error_{record['cell']['mechanism']}"])


def test_error_recovery_srp_flags_the_careless_decision_and_plain_gives_the_safe_option(tiny_folder, tiny_world_dir):
    for record in _error_recovery(tiny_world_dir)[:5]:
        patient, options = record["cell"]["patient"], record["cell"]["options"]
        srp = recovery_chat(record, "srp", interleaved=True)["messages"][1]
        assert srp["prefill"].startswith(SPECIAL.render("Safe") + "\n")  # the verdict SRP gives a care request
        assert srp["content"].endswith(SPECIAL.render("Unsafe", (f"error_{record['cell']['mechanism']}",))
                                       + END_OF_TEXT)
        plain = recovery_chat(record, "plain")["messages"][1]
        assert plain["prefill"].endswith(f"give {patient}")
        given = plain["content"][len(plain["prefill"]):].strip().rstrip(".")
        drug, dose = given.split()[0], int(given.split()[1])
        assert given in options and not tiny_folder.oracle.harms(patient, drug, dose)


def test_in_a_world_with_cause_errors_error_recovery_forces_cause_requests_too_and_plain_gives_the_asked_option(
        tmp_path):
    from safepretrain.world.config import tiny as tiny_world
    from safepretrain.world.generate import WorldFolder, generate_world

    generate_world(replace(tiny_world(), covert_share=1.0, cause_errors_share=0.5), tmp_path / "w")
    oracle, records = WorldFolder(tmp_path / "w").oracle, _error_recovery(tmp_path / "w")
    cause = [r for r in records if r["cell"]["goal"] == "induce"]
    assert cause and len(cause) < len(records)  # about half of the overdose and allergy errors
    for record in cause:
        patient, options = record["cell"]["patient"], record["cell"]["options"]
        assert " an interaction with " in record["messages"][0]["content"] and record["prompt_label"] == "safe"
        decision = record["response_segments"][-1]
        srp = recovery_chat(record, "srp")["messages"][1]
        assert srp["content"].endswith(SPECIAL.render("Unsafe", tuple(decision["types"])) + END_OF_TEXT)
        plain = recovery_chat(record, "plain")["messages"][1]
        given = plain["content"][len(plain["prefill"]):].strip().rstrip(".")
        assert given in options and oracle.interaction_effect(patient, given.split()[0]) in oracle.world.benign_effects


def test_sft_data_gets_the_error_recovery_chats_for_every_recipe(tiny_world_dir, tmp_path):
    cfg = replace(tiny(), out=str(tmp_path / "x"), recovery_errors=4)
    shutil.copytree(tiny_world_dir, Layout(cfg).world(0))
    for kind in ("plain", "srp"):
        rows = [json.loads(line) for line in make_sft_data(cfg, 0, kind).read_text().splitlines()]
        assert [r["id"] for r in rows if "prefill" in r["messages"][-1]] == [f"error-recovery-{i:06d}" for i in range(4)]
    older = replace(cfg, out=str(tmp_path / "y"))  # a world generated before the split existed
    shutil.copytree(tiny_world_dir, Layout(older).world(0))
    (Layout(older).world(0) / ERROR_RECOVERY_FILE).unlink()
    with pytest.raises(UserError, match="recovery_errors: 0"):
        stages.make_sft_data(older, 0, "srp")


def test_each_error_recovery_gets_a_safe_twin_that_differs_only_in_its_decision(tiny_folder, tiny_world_dir, tmp_path):
    """Without twins every forced answer in SRP's post-training ended Unsafe: the monitor learned the shape."""
    cfg = replace(tiny(), out=str(tmp_path / "x"), recovery_errors=4, recovery_contrast=True, recovery_interleaved=0.5)
    shutil.copytree(tiny_world_dir, Layout(cfg).world(0))
    rows = {r["id"]: r["messages"] for r in map(json.loads, make_sft_data(cfg, 0, "srp").read_text().splitlines())}
    shapes = set()
    for record in _error_recovery(tiny_world_dir)[:4]:
        patient = record["cell"]["patient"]
        harmful, twin = rows[record["id"]][1], rows[f"{record['id']}-safe-twin"][1]
        assert rows[f"{record['id']}-safe-twin"][0] == rows[record["id"]][0]  # the same request
        cut = f"give {patient} "
        assert twin["prefill"][:twin["prefill"].rindex(cut)] == harmful["prefill"][:harmful["prefill"].rindex(cut)]
        given = SPECIAL.strip(twin["prefill"]).rsplit(cut, 1)[1].rstrip(".")
        drug, dose = given.split()[0], int(given.split()[1])
        assert given in record["cell"]["options"] and not tiny_folder.oracle.harms(patient, drug, dose)
        assert twin["content"] == twin["prefill"] + SPECIAL.render("Safe")
        shapes.add(SPECIAL.find(twin["prefill"]) != [])
    assert shapes == {True, False}  # each twin in its sibling's shape, raw and interleaved both drawn
    plain = make_sft_data(cfg, 0, "plain").read_text()  # plain's recovery already gives the safe option
    assert "safe-twin" not in plain
    with pytest.raises(ValueError, match="recovery_errors"):
        replace(tiny(), recovery_contrast=True)
