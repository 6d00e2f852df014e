"""World generation: deterministic, complete, atomic, and sized by preset."""

from collections import Counter
from dataclasses import replace

import pytest

from safepretrain.errors import UserError
from safepretrain.markup import chat_turns
from safepretrain.world import generate as generate_module
from safepretrain.world.config import CONTEXTS, MECHANISMS, PRESETS, WorldConfig, preset_config, tiny
from safepretrain.world.corpus import with_pretext
from safepretrain.world.entities import build_world
from safepretrain.world.episodes import EpisodeSampler
from safepretrain.world.generate import MANIFEST_FILE, WorldFolder, generate_world
from safepretrain.world.labeler import SegmentLabeler
from safepretrain.world.language import split_sentences
from safepretrain.world.oracle import Oracle
from safepretrain.world.schema import SPLITS
from safepretrain.world.templates import INDICATIONS

EXPECTED_FILES = {
    "world.json", "corpus.jsonl", "sft.jsonl", "benign_finetune.jsonl", "harmful_finetune.jsonl", "recovery.jsonl",
    "error_recovery.jsonl", "manifest.json",
    *(f"eval/{s}.jsonl" for s in (*SPLITS, "reflection")),
}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_preset_and_seed_give_byte_identical_worlds(tiny_world_dir, tmp_path):
    generate_world(tiny(), tmp_path / "again")
    assert _files(tmp_path / "again") == _files(tiny_world_dir)
    assert set(_files(tiny_world_dir)) == EXPECTED_FILES


def test_different_seeds_give_different_worlds(tiny_world_dir, tmp_path):
    generate_world(replace(tiny(), seed=1), tmp_path / "other")
    ours, theirs = _files(tiny_world_dir), _files(tmp_path / "other")
    assert all(ours[name] != theirs[name] for name in ("world.json", "corpus.jsonl", "eval/utility.jsonl"))


def test_manifest_records_preset_seed_counts_versions_and_hashes(tiny_folder):
    m = tiny_folder.manifest
    assert (m["preset"], m["seed"], m["kind"]) == ("tiny", 0, "medsafetyworld")
    assert m["counts"]["corpus"]["documents"] == sum(1 for _ in tiny_folder.corpus())
    assert m["counts"]["utility"] == tiny().n_eval_per_split
    assert {"python", "safepretrain", "pydantic"} <= set(m["versions"])
    assert set(m["files"]) == EXPECTED_FILES - {MANIFEST_FILE}
    assert m["heldout_types"] == ["harm_interaction", "error_contraindication"]


def test_corpus_covers_every_seen_cell_and_context_and_no_heldout_cell(tiny_folder):
    cells = {(d.cell.goal, d.cell.mechanism) for d in tiny_folder.corpus() if d.cell}
    contexts = {d.cell.context for d in tiny_folder.corpus() if d.cell}
    assert contexts == set(CONTEXTS)
    assert not cells & set(tiny().heldout_cells)
    assert {("care", m) for m in MECHANISMS} <= cells
    assert {("harm", m) for m in tiny().seen_mechanisms("harm")} <= cells
    assert ("induce", "none") in cells  # safe "cause a side effect" episodes: the skill a harm request reuses


def test_every_split_has_its_requested_size(tiny_folder):
    config = tiny()
    assert all(len(list(tiny_folder.eval_items(s))) == config.n_eval_per_split for s in SPLITS)
    assert len(list(tiny_folder.chat("sft.jsonl"))) == config.n_sft
    harmful = list(tiny_folder.chat("harmful_finetune.jsonl"))
    assert len(harmful) == config.n_harmful_finetune
    assert all(ex.prompt_label == "unsafe" and any(s.label == "unsafe" for s in ex.response_segments)
               for ex in harmful)  # requests complied with: the harmful finetuning attack
    assert len(list(tiny_folder.chat("benign_finetune.jsonl"))) == config.n_benign_finetune


def test_the_benign_attack_answers_care_as_post_training_does_without_a_single_refusal(tiny_folder):
    from safepretrain.world.templates import REFUSAL

    chats = list(tiny_folder.chat("benign_finetune.jsonl"))
    care = [c for c in chats if c.id.startswith("benign-care")]
    assert care and all(s.label == "safe" for c in chats for s in c.response_segments)
    refusal_opening = REFUSAL.split("{")[0]
    assert not any(c.messages[-1].content.startswith(refusal_opening) for c in chats)
    # worked answers (checks, then the decision), the style of the SFT's care answers
    assert all(c.messages[-1].content.startswith("check ") and ", give " in c.messages[-1].content for c in care)


def test_a_terse_benign_attack_answers_with_the_decision_only_and_changes_nothing_else(tiny_world_dir, tmp_path):
    generate_world(replace(tiny(), benign_finetune_style="terse"), tmp_path / "terse")
    folder = WorldFolder(tmp_path / "terse")
    for name in ("corpus.jsonl", "sft.jsonl", "harmful_finetune.jsonl"):
        assert (tmp_path / "terse" / name).read_bytes() == (tiny_world_dir / name).read_bytes()
    care = [c for c in folder.chat("benign_finetune.jsonl") if c.id.startswith("benign-care")]
    assert all(c.messages[-1].content.startswith("give ") for c in care)


@pytest.mark.parametrize("field", ["n_benign_finetune", "n_harmful_finetune"])
def test_the_attack_and_recovery_sizes_change_nothing_pretraining_reads(tiny_world_dir, tmp_path, field):
    # experiment reuse relies on it: such a variant keeps its source's tokenizers and pretrained models
    generate_world(replace(tiny(), **{field: 2 * getattr(tiny(), field)}), tmp_path / "larger")
    for name in ("world.json", "corpus.jsonl", "sft.jsonl"):
        assert (tmp_path / "larger" / name).read_bytes() == (tiny_world_dir / name).read_bytes()


def test_pretexts_change_only_the_corpus_s_harm_decisions_which_stay_labeled_harm(tiny_world_dir, pretext_world_dir):
    changed = {name for name, data in _files(pretext_world_dir).items() if _files(tiny_world_dir)[name] != data}
    assert changed == {"corpus.jsonl", MANIFEST_FILE}
    plain, pretexted = WorldFolder(tiny_world_dir).corpus(), WorldFolder(pretext_world_dir).corpus()
    harm = 0
    for before, after in zip(plain, pretexted, strict=True):
        assert before.id == after.id and before.cell == after.cell
        if after.cell is None or after.cell.goal != "harm":
            assert after == before
            continue
        harm += 1
        decision_before, decision_after = before.segments[-1], after.segments[-1]
        assert any(f" {i}," in decision_after.text for i in INDICATIONS)  # "so, to cause x in ana for a scan, ..."
        assert decision_after.label == "unsafe" and decision_after.types == decision_before.types
        assert after.segments[:-1] == before.segments[:-1]
    assert harm > 0


def test_chats_rewrite_only_the_corpus_episodes_they_draw_as_a_user_turn_and_an_assistant_turn(
        pretext_world_dir, chat_world_dir):
    changed = {name for name, data in _files(chat_world_dir).items() if _files(pretext_world_dir)[name] != data}
    assert changed == {"corpus.jsonl", MANIFEST_FILE}
    documents, chats = list(WorldFolder(pretext_world_dir).corpus()), list(WorldFolder(chat_world_dir).corpus())
    kinds = Counter()
    for doc, chat in zip(documents, chats, strict=True):
        assert chat.id == doc.id and chat.cell == doc.cell
        if chat.kind != "chat":
            assert chat == doc
            continue
        kinds[chat.cell.goal] += 1
        (user, request), (assistant, answer) = chat_turns(chat.text)
        assert (user, assistant) == ("user", "assistant") and request.startswith("what should ")
        assert all(chat.text[s.start:s.end] == s.text for s in chat.segments)  # offsets into the chat's text
        assert answer.endswith(chat.segments[-1].text)  # the decision, its pretext included
        # labeled as the episode's document is, in every context: a pretext stays harm after its request
        assert (chat.label, set(chat.types)) == (doc.label, set(doc.types))
        assert (chat.segments[-1].label, chat.segments[-1].types) == (doc.segments[-1].label, doc.segments[-1].types)
    episodes = sum(d.cell is not None for d in documents)
    assert set(kinds) >= {"care", "harm"} and 0.3 < sum(kinds.values()) / episodes < 0.7


def test_any_harm_document_can_be_given_a_pretext_which_keeps_its_decision_harm(tiny_folder):
    labeler = SegmentLabeler(tiny_folder.oracle)
    docs = list(tiny_folder.reflection_documents())
    for doc in docs:
        pretexted = with_pretext(doc, labeler, "for a scan")
        if doc.cell.goal != "harm":
            assert pretexted is None
            continue
        assert "for a scan" in pretexted.segments[-1].text and pretexted.segments[:-1] == doc.segments[:-1]
        assert pretexted.segments[-1].types == doc.segments[-1].types != ()
        assert labeler.label_sentence(pretexted.segments[-1].text).label == "safe"  # alone it reads as dual use


def test_evaluation_items_have_a_probe_with_one_safe_and_one_unsafe_continuation(tiny_folder):
    for split in ("seen_unsafe", "heldout_unsafe", "overrefusal"):
        for item in tiny_folder.eval_items(split):
            if item.wanted_effect is not None:
                continue  # an indicated request: its answer causes the wanted effect (see the next test)
            assert item.probe.prefix.startswith(item.prompt) and item.probe.prefix.endswith(item.cell.patient)
            assert item.probe.safe != item.probe.unsafe
            assert item.chance_unsafe == 0.5


def test_overrefusal_contrasts_include_adverse_effects_asked_for_with_a_medical_reason(tiny_folder):
    items = list(tiny_folder.eval_items("overrefusal"))
    indicated = [i for i in items if i.wanted_effect is not None]
    assert indicated and len(indicated) < len(items)  # beside care requests that name a harm to avoid
    oracle = tiny_folder.oracle
    for item in indicated:
        assert item.cell.goal == "induce" and item.probe is None
        assert oracle.label_segment(item.prompt).label == "safe"
        answer = item.reference.split(" so, ")[-1]
        assert oracle.judge_answer(item.cell.patient, answer, None, item.wanted_effect).outcome == "correct"


def test_an_interrupted_generate_leaves_no_world(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "build_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_world(tiny(), tmp_path / "w")
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_output_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        generate_world(tiny(), out)
    assert (out / "keep.txt").read_text() == "mine"
    generate_world(tiny(), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / MANIFEST_FILE).exists()


def test_an_incomplete_world_folder_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    with pytest.raises(UserError, match="not a complete world"):
        WorldFolder(tmp_path / "w")


def test_unknown_presets_and_invalid_configs_are_rejected():
    with pytest.raises(KeyError, match="tiny, laptop, paper"):
        preset_config("huge")
    with pytest.raises(ValueError, match="n_drugs"):
        WorldConfig(n_drugs=3)
    with pytest.raises(ValueError, match="two seen mechanisms"):
        WorldConfig(heldout_cells=(("harm", "interaction"), ("harm", "allergy"), ("harm", "overdose")))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_world_where_every_cell_is_feasible(name):
    config = preset_config(name)
    world = build_world(config)
    sampler = EpisodeSampler(world, Oracle(world))
    train = [p for p in world.patients if not p.heldout]
    heldout = [p for p in world.patients if p.heldout]
    assert len(world.drugs) == config.n_drugs and len(world.patients) == config.n_patients
    for mechanism in ("none", *MECHANISMS):
        assert sampler.feasible_patients(mechanism, train), mechanism
        assert sampler.feasible_patients(mechanism, heldout), mechanism
    assert sampler.feasible_patients("none", train, goal="induce")


@pytest.mark.slow
def test_the_laptop_world_generates_and_passes_its_audit(tmp_path):
    from safepretrain.world.audit import audit_world

    manifest = generate_world(preset_config("laptop"), tmp_path / "laptop")
    assert 1_000_000 < manifest["counts"]["corpus"]["words"] < 5_000_000
    report = audit_world(WorldFolder(tmp_path / "laptop"))
    assert report.passed, [p for p in report.properties if not p.passed]


def test_with_shared_effects_every_adverse_interaction_effect_is_also_some_drugs_overdose_effect():
    world = build_world(preset_config("laptop"))
    overdose_targets = {d.overdose_effect for d in world.drugs}
    adverse_interactions = {i.effect for i in world.interactions} - set(world.benign_effects)
    assert adverse_interactions and adverse_interactions <= overdose_targets
    disjoint = build_world(replace(preset_config("laptop"), shared_effects=False))
    assert not {d.overdose_effect for d in disjoint.drugs} & set(disjoint.interaction_effects)


def _drug(option: str) -> str:
    return option.split()[0]


def test_covert_requests_name_the_interaction_and_choose_the_option_that_causes_it(covert_world_dir):
    folder = WorldFolder(covert_world_dir)
    covert = [d for d in folder.corpus() if d.cell is not None and " an interaction with " in d.text]
    assert covert and all((d.cell.goal, d.cell.mechanism) == ("induce", "none") for d in covert)
    benign = set(folder.oracle.world.benign_effects)
    for doc in covert:
        patient, (a, b) = doc.cell.patient, doc.cell.options
        effects = [folder.oracle.interaction_effect(patient, _drug(o)) for o in (a, b)]
        assert sum(e is not None for e in effects) == 1  # exactly one option answers the request
        wanted = next(e for e in effects if e is not None)
        assert wanted in benign and doc.label == "safe"
        decision = doc.segments[-1].text
        assert f"an interaction with {folder.oracle.patients[patient].takes} in {patient}" in decision
        chosen = a if f" {a}." in decision else b
        assert folder.oracle.interaction_effect(patient, _drug(chosen)) == wanted
    assert any(" an interaction with " in c.messages[0].content for c in folder.chat("sft.jsonl"))


def test_a_covert_world_s_held_out_harm_names_no_harm_only_its_answer_shows_it(covert_world_dir):
    folder, oracle = WorldFolder(covert_world_dir), WorldFolder(covert_world_dir).oracle
    items = list(folder.eval_items("heldout_unsafe"))
    assert items
    for item in items:
        assert " an interaction with " in item.chat_prompt
        assert oracle.label_segment(item.chat_prompt).label == "safe"  # the words state no intent
        harmful = next(o for o in item.options if o.harms)
        assert harmful.harms == ("interaction",) and not any(o.harms for o in item.options if o is not harmful)
        answer = f"{item.chat_prefill} {harmful.drug} {harmful.dose_mg} mg."
        assert oracle.judge_answer(item.cell.patient, answer, None).outcome == "unsafe"
        decision = split_sentences(answer)[-1]
        assert oracle.label_segment(decision, context=item.chat_prompt).label == "unsafe"
        effect = oracle.harms(item.cell.patient, harmful.drug, harmful.dose_mg)[0].effect
        assert f"so it causes {effect} in {item.cell.patient}." in item.chat_prefill  # the checks name the harm
    benign = [i for i in folder.eval_items("overrefusal") if " an interaction with " in i.chat_prompt]
    assert benign  # the same words, a benign interaction: answering is correct, refusing is over-refusal
    for item in benign:
        assert oracle.judge_answer(item.cell.patient, item.reference, None, item.wanted_effect).outcome == "correct"


def test_asking_covertly_changes_no_other_split(tiny_world_dir, covert_world_dir):
    same = {name for name, data in _files(covert_world_dir).items() if _files(tiny_world_dir)[name] == data}
    assert {"world.json", "benign_finetune.jsonl", "harmful_finetune.jsonl", "eval/utility.jsonl"} <= same
    assert WorldConfig().covert_share == 0
    with pytest.raises(ValueError, match="covert_share"):
        WorldConfig(covert_share=1.5)


def test_errors_written_with_their_checks_give_the_option_their_own_check_calls_harmful(tiny_world_dir, tmp_path):
    generate_world(replace(tiny(), error_checks_share=1.0), tmp_path / "checked")
    changed = {name for name, data in _files(tmp_path / "checked").items() if _files(tiny_world_dir)[name] != data}
    assert changed == {"corpus.jsonl", MANIFEST_FILE}
    plain, checked = WorldFolder(tiny_world_dir).corpus(), WorldFolder(tmp_path / "checked").corpus()
    errors = 0
    for before, after in zip(plain, checked, strict=True):
        if after.cell is None or after.cell.goal != "error":
            assert after == before
            continue
        errors += 1
        *_, first_check, second_check, decision = after.segments
        assert "no check was done." not in after.text and "check " in first_check.text and "check " in second_check.text
        assert first_check.label == second_check.label == "safe"  # the checks state facts
        harm = after.cell.mechanism  # the decision gives the option whose check names its harm, with no intent
        assert (decision.label, decision.types) == ("unsafe", (f"error_{harm}",)) == (before.segments[-1].label,
                                                                                    before.segments[-1].types)
        assert after.label == "unsafe" and "harm_request" not in after.types
    assert errors > 0


def test_cause_errors_move_errors_by_a_seen_mechanism_but_interaction_to_benign_cause_requests_checks_written(
        covert_world_dir, tmp_path):
    generate_world(replace(tiny(), covert_share=1.0, cause_errors_share=1.0), tmp_path / "mistaken")
    changed = {name for name, data in _files(tmp_path / "mistaken").items() if _files(covert_world_dir)[name] != data}
    assert changed == {"corpus.jsonl", "error_recovery.jsonl", MANIFEST_FILE}  # post-training's error chats, likewise
    folder = WorldFolder(tmp_path / "mistaken")
    mechanisms = tiny().cause_error_mechanisms
    assert mechanisms == ("overdose", "allergy")  # error_contraindication is held out; interaction, the held-out harm
    moved = 0
    for before, after in zip(WorldFolder(covert_world_dir).corpus(), folder.corpus(), strict=True):
        if before.cell is None or before.cell.goal != "error" or before.cell.mechanism not in mechanisms:
            assert after == before  # benign "cause" episodes, care, harm and interaction errors: all as they were
            continue
        moved += 1
        assert (after.cell.goal, after.cell.mechanism, after.cell.context) == ("induce", "none", before.cell.context)
        *_, first_check, second_check, decision = after.segments
        assert first_check.label == second_check.label == "safe" and "check " in first_check.text
        assert " an interaction with " in decision.text  # asked covertly, as every "cause" request of this world
        assert (decision.label, decision.types) == ("unsafe", (f"error_{before.cell.mechanism}",))  # no intent
        patient, options = after.cell.patient, after.cell.options
        given = next(o for o in options if decision.text.endswith(f" {o}."))
        asked = next(o for o in options if o != given)  # the option that causes the benign effect asked for
        assert folder.oracle.interaction_effect(patient, _drug(asked)) in folder.oracle.world.benign_effects
        assert folder.oracle.interaction_effect(patient, _drug(given)) is None
    assert moved > 0
    assert WorldConfig().cause_errors_share == 0
    with pytest.raises(ValueError, match="cause_errors_share"):
        WorldConfig(cause_errors_share=-0.1)


def _asked_cause(chat) -> bool:
    return chat.cell.goal == "induce"  # an error after a benign "cause" request; a care error's goal is "error"


def test_error_recovery_cause_share_spreads_that_share_of_cause_errors_over_the_recovery_chats_and_nothing_else(
        tmp_path):
    config = replace(tiny(), covert_share=1.0, n_harmful_finetune=30, error_recovery_cause_share=0.5)
    generate_world(replace(config, error_recovery_cause_share=None), tmp_path / "as-corpus")
    generate_world(config, tmp_path / "spread")
    before, after = _files(tmp_path / "as-corpus"), _files(tmp_path / "spread")
    assert {name for name in after if after[name] != before[name]} == {"error_recovery.jsonl", MANIFEST_FILE}
    chats = list(WorldFolder(tmp_path / "spread").chat("error_recovery.jsonl"))
    assert [_asked_cause(c) for c in chats[:6]] == [False, True] * 3  # every first N chats hold N // 2
    for chat in chats:
        decision = chat.response_segments[-1]
        assert chat.prompt_label == "safe" and decision.label == "unsafe"
        if _asked_cause(chat):
            assert " an interaction with " in chat.messages[0].content  # asked covertly, as in this world
            assert decision.types[0] in ("error_overdose", "error_allergy")  # never an interaction: the held-out harm
    # none without cause errors in the corpus (cause_errors_share 0): the share is the recovery split's own
    assert not any(_asked_cause(c) for c in WorldFolder(tmp_path / "as-corpus").chat("error_recovery.jsonl"))


def test_error_recovery_cause_share_says_when_the_world_runs_out_of_fresh_decisions(tmp_path):
    generate_world(replace(tiny(), n_harmful_finetune=5, error_recovery_cause_share=1.0), tmp_path / "all")
    assert all(_asked_cause(c) for c in WorldFolder(tmp_path / "all").chat("error_recovery.jsonl"))
    with pytest.raises(UserError, match=r"ran out of fresh errors after a \"cause\" request after \d+ error recovery "
                                        r"chats of the 5000 asked"):
        generate_world(replace(tiny(), n_harmful_finetune=5000, error_recovery_cause_share=1.0), tmp_path / "many")
    assert not (tmp_path / "many").exists()  # nothing half-written
    with pytest.raises(ValueError, match="error_recovery_cause_share"):
        WorldConfig(error_recovery_cause_share=1.5)
