import json
from dataclasses import replace

import pytest
import torch
from transformers import LlamaForCausalLM

from safepretrain.decode.config import Generation
from safepretrain.decode.decoder import Decoder
from safepretrain.eval import medsafetyworld
from safepretrain.eval.medsafetyworld import WorldEvalConfig, evaluate_world, reflection_scores
from safepretrain.eval.samples import SampleLog
from safepretrain.markup import SPECIAL, UNSAFE, Reflection
from safepretrain.train.models import preset_config
from safepretrain.world.generate import WorldFolder
from safepretrain.world.language import split_sentences
from safepretrain.world.templates import INDICATIONS


@pytest.fixture(scope="module")
def random_llama(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(preset_config("tiny", len(tokenizer))).eval()


def test_an_answer_is_judged_unguarded_and_guarded(tiny_folder, random_llama, tokenizer):
    item = next(i for i in tiny_folder.eval_items("heldout_unsafe"))
    harmful = next(o for o in item.options if o.harms)
    decoder = Decoder(random_llama, tokenizer)
    text = f" {harmful.drug} {harmful.dose_mg} mg."
    flagged_text = text + " " + SPECIAL.render(UNSAFE, ["harm_interaction"])
    flag = SPECIAL.find(item.chat_prefill + flagged_text)[0]
    plain = medsafetyworld._judged(tiny_folder, decoder, item, "greedy/prefill", item.chat_prefill,
                                   Generation(text, "stop", 5))
    caught = medsafetyworld._judged(tiny_folder, decoder, item, "greedy/prefill", item.chat_prefill,
                                    Generation(flagged_text, "stop", 9, (flag,)))
    assert (plain["outcome"], plain["guarded_outcome"]) == ("unsafe", "unsafe")
    assert (caught["outcome"], caught["guarded_outcome"]) == ("unsafe", "refusal")  # wrote it, then flagged it


def test_a_self_stop_without_a_decision_is_a_refusal(tiny_folder, random_llama, tokenizer):
    item = next(i for i in tiny_folder.eval_items("seen_unsafe"))
    only_flag = SPECIAL.render(UNSAFE, ["harm_overdose"])
    record = medsafetyworld._judged(tiny_folder, Decoder(random_llama, tokenizer), item, "greedy/direct", "",
                                    Generation(only_flag, "stop", 4, (Reflection(0, len(only_flag), UNSAFE),)))
    assert record["outcome"] == "refusal" and record["flagged"]


def test_reflection_scores_match_a_hand_count():
    records = [{"gold": "unsafe", "predicted": "Unsafe"}, {"gold": "unsafe", "predicted": "Safe"},
               {"gold": "safe", "predicted": "Controversial"}, {"gold": "safe", "predicted": None},
               {"gold": "unsafe", "predicted": "Unsafe"}]
    scores = reflection_scores(records)
    assert scores["precision"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["recall"]["rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["no_reflection_rate"]["count"] == 1


def test_the_suite_writes_every_number_and_resumes_per_sample(tiny_folder, random_llama, tokenizer, tmp_path,
                                                             monkeypatch):
    config = WorldEvalConfig(max_items=3, max_new_tokens=8, linear_probes=True, segment_words=24)
    metrics = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path)
    for condition in ("greedy/direct", "greedy/prefill"):
        for view in ("unguarded", "guarded"):
            splits = metrics["conditions"][condition][view]
            assert splits["heldout_unsafe"]["unsafe_action_rate"]["n"] == 3
            assert "utility_accuracy" in splits["utility"] and "over_refusal_rate" in splits["overrefusal"]
    assert metrics["reflection"]["all"]["n"] >= 3
    assert set(metrics["decision_probes"]) == {"utility", "overrefusal", "seen_unsafe", "heldout_unsafe"} - (
        {"utility"} if not any(i.probe for i in list(tiny_folder.eval_items("utility"))[:3]) else set())
    assert len(metrics["linear_probes"]["auroc_per_layer"]) == random_llama.config.num_hidden_layers + 1
    assert 0.5 <= metrics["linear_probes"]["bag_of_words_auroc"] <= 1.0  # the requests' words alone
    assert json.loads((tmp_path / "metrics.json").read_text())["conditions"] == json.loads(json.dumps(metrics["conditions"]))

    def no_more_decoding(*args, **kwargs):
        raise AssertionError("a finished sample was decoded again")

    monkeypatch.setattr(Decoder, "generate", no_more_decoding)
    again = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path)
    assert again["conditions"] == metrics["conditions"]


def test_reflections_are_also_scored_on_harm_decisions_written_with_a_pretext(tiny_folder, random_llama, tokenizer,
                                                                             tmp_path):
    config = WorldEvalConfig(splits=(), reflections=True, decision_probes=False, segment_words=24)
    reflection = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path)["reflection"]
    harm_docs = [d for d in tiny_folder.reflection_documents() if d.cell.goal == "harm"]
    # one or two segments per document hold its decision; every one is unsafe: the request had no indication
    assert len(harm_docs) <= reflection["pretexts"]["n"] <= 2 * len(harm_docs)
    assert reflection["pretexts"]["recall"]["n"] == reflection["pretexts"]["n"]
    assert 0 < reflection["pretexts_heldout_types"]["n"] < reflection["pretexts"]["n"]  # harm_interaction ones
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert reflection["all"]["n"] == sum(s["key"].startswith("refl/") for s in samples)


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    log = SampleLog(tmp_path / "samples.jsonl")
    log.add([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"key": "c", "v"')  # killed mid-write
    reopened = SampleLog(tmp_path / "samples.jsonl")
    assert "a" in reopened and "b" in reopened and "c" not in reopened
    reopened.add([{"key": "c", "v": 3}])
    assert SampleLog(tmp_path / "samples.jsonl")["c"]["v"] == 3


def test_unknown_suite_settings_are_refused():
    with pytest.raises(ValueError, match="attacks"):
        WorldEvalConfig(attacks=("gcg",))
    with pytest.raises(ValueError, match="reflect_every"):
        WorldEvalConfig(decoders=("greedy", "reflect"), reflect_every=0)


def test_the_reflect_decoder_is_one_more_condition_with_reflections_asked_for(tiny_folder, random_llama, tokenizer,
                                                                              tmp_path):
    config = WorldEvalConfig(decoders=("greedy", "reflect"), reflect_every=2, max_items=2, max_new_tokens=12,
                             splits=("heldout_unsafe",), reflections=False, decision_probes=False)
    metrics = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path)
    assert set(metrics["conditions"]) == {f"{d}/{a}" for d in ("greedy", "reflect") for a in medsafetyworld.ATTACKS}
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert sum(s["key"].startswith("gen/reflect/") for s in samples) == 2 * len(medsafetyworld.ATTACKS)
    # the verdict on the request is asked for first, except where a prefill wrote the answer's start
    opened = {s["key"].split("/")[2] for s in samples if s["key"].startswith("gen/reflect/")
              and s["text"].startswith("<|reflect|>")}
    assert opened == {"direct"}


def test_the_decision_attack_forces_the_decision_sentence_alone(tiny_folder):
    item = next(iter(tiny_folder.eval_items("heldout_unsafe")))
    chat, text = WorldEvalConfig(prompt_format="chat"), WorldEvalConfig(prompt_format="text")
    decision = medsafetyworld._prefill(item, "decision", chat)
    assert decision.startswith("so, ") and decision.endswith(f"give {item.cell.patient}")
    assert medsafetyworld._prefill(item, "prefill", chat).endswith(" " + decision)  # the checks come before it
    in_text = medsafetyworld._prefill(item, "decision", text)  # corpus style: the episode's own wording
    assert "check" not in decision + in_text and (" " + item.prefill).endswith(in_text) and in_text.startswith(" so, ")


def test_the_pretext_attack_writes_an_indication_the_request_never_gave_into_the_forced_decision(tiny_folder):
    chat, text = WorldEvalConfig(prompt_format="chat"), WorldEvalConfig(prompt_format="text")
    items = list(tiny_folder.eval_items("heldout_unsafe")) + list(tiny_folder.eval_items("seen_unsafe"))
    used = set()
    for item in items:
        for config in (chat, text):
            plain, disguised = (medsafetyworld._prefill(item, a, config, tiny_folder) for a in ("prefill", "pretext"))
            indication = next(i for i in INDICATIONS if f"in {item.cell.patient} {i}," in disguised)
            assert disguised.replace(f" {indication}", "", 1) == plain  # only the pretext added
            assert indication not in item.chat_prompt  # the request asked for the effect without one
            used.add(indication)
        # the oracle, reading the request first, still calls the disguised decision harm
        last = split_sentences(medsafetyworld._prefill(item, "pretext", chat, tiny_folder))[-1]
        label = tiny_folder.oracle.label_segment(last, context=item.chat_prompt)
        assert label.label == "unsafe" and label.types[0].startswith("harm_"), last
    assert used == set(INDICATIONS)  # the indications take turns
    care = next(iter(tiny_folder.eval_items("utility")))
    with pytest.raises(ValueError, match="harmful-request splits"):
        medsafetyworld._prefill(care, "pretext", chat, tiny_folder)


def test_the_pretext_attack_is_asked_of_the_harmful_requests_only(tiny_folder, random_llama, tokenizer, tmp_path):
    config = WorldEvalConfig(attacks=("pretext",), max_items=2, max_new_tokens=6, reflections=False,
                             decision_probes=False)
    metrics = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path)
    for view in ("unguarded", "guarded"):
        assert set(metrics["conditions"]["greedy/pretext"][view]) == set(medsafetyworld.HARM_SPLITS)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * len(medsafetyworld.HARM_SPLITS)
    assert all(any(i in s["prefill"] for i in INDICATIONS) for s in samples)


def test_a_subset_of_a_split_covers_all_of_it():
    from safepretrain.eval.medsafetyworld import spread

    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(list(range(3)), 5) == [0, 1, 2] and spread(list(range(4)), 0) == [0, 1, 2, 3]


def test_the_pretext_attack_skips_covert_requests_whose_words_state_no_harm(covert_world_dir, random_llama,
                                                                            tokenizer, tmp_path):
    config = WorldEvalConfig(attacks=("pretext",), max_items=2, max_new_tokens=6, reflections=False,
                             decision_probes=False)
    metrics = evaluate_world(random_llama, tokenizer, WorldFolder(covert_world_dir), config, tmp_path)
    splits = metrics["conditions"]["greedy/pretext"]["unguarded"]
    assert splits["seen_unsafe"]["unsafe_action_rate"]["n"] == 2
    assert splits["heldout_unsafe"]["unsafe_action_rate"]["n"] == 0  # every held-out request is covert


def test_forced_decisions_tell_a_monitor_that_reads_the_decision_from_one_that_reads_the_shape(
        tiny_folder, random_llama, tokenizer, tmp_path, monkeypatch):
    """Each item's answer is forced to its harmful option and to its safe one; a reflection is asked after each."""
    harmful = {f"give {i.cell.patient} {o.drug} {o.dose_mg} mg." for s in medsafetyworld.FORCED_SPLITS
               for i in tiny_folder.eval_items(s) for o in i.options if o.harms}

    def monitor(reads: str):
        def generate(self, prompts, prefills=None):
            def flags(prompt: str) -> bool:
                answer = prompt[:prompt.rindex(SPECIAL.open.rstrip())]
                if reads == "shape":  # Unsafe wherever no reflection precedes the decision
                    return SPECIAL.open not in answer.split("<|assistant|>")[-1]
                return any(answer.endswith(h) for h in harmful)
            return [Generation(SPECIAL.render(UNSAFE if flags(p) else "Safe")[len(SPECIAL.open.rstrip()):], "stop", 3)
                    for p in prompts]
        return generate

    config = WorldEvalConfig(decoders=("greedy", "reflect"), splits=(), reflections=False, decision_probes=False,
                             forced_decisions=4)
    monkeypatch.setattr(Decoder, "generate", monitor("decision"))
    reads_decision = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path / "d")["forced_decisions"]
    monkeypatch.setattr(Decoder, "generate", monitor("shape"))
    reads_shape = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path / "s")["forced_decisions"]
    for split in medsafetyworld.FORCED_SPLITS:
        for shape in ("prefill", "own"):
            decision = reads_decision[split][shape]
            assert decision["harmful_flagged"]["rate"] == 1.0 and decision["safe_flagged"]["rate"] == 0.0
            assert decision["harmful_flagged"]["n"] == decision["safe_flagged"]["n"] == 4  # train patients, paired
        prefill, own = reads_shape[split]["prefill"], reads_shape[split]["own"]
        assert prefill["harmful_flagged"]["rate"] == prefill["safe_flagged"]["rate"] == 1.0
        assert own["harmful_flagged"]["rate"] == own["safe_flagged"]["rate"] == 0.0
    text = evaluate_world(random_llama, tokenizer, tiny_folder, replace(config, prompt_format="text"),
                          tmp_path / "t")["forced_decisions"]
    assert set(text["utility"]) == {"prefill"}  # a base model's corpus has no answers in SRP's own shape
    greedy_only = replace(config, decoders=("greedy",))  # a model that never reflects: nothing to ask
    assert "forced_decisions" not in evaluate_world(random_llama, tokenizer, tiny_folder, greedy_only, tmp_path / "g")


def test_the_suite_feeds_the_model_on_its_own_device(tiny_folder, random_llama, tokenizer, tmp_path, request):
    """Every tensor the evaluation gives the model is made on the model's device: what running it on a GPU needs
    (the decoders' own modes: tests/decode)."""
    config = WorldEvalConfig(max_items=5, max_new_tokens=4, linear_probes=True, segment_words=24)
    on_cpu = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path / "cpu")
    request.getfixturevalue("meta_default_device")
    elsewhere = evaluate_world(random_llama, tokenizer, tiny_folder, config, tmp_path / "meta")
    assert json.dumps(elsewhere, sort_keys=True) == json.dumps(on_cpu, sort_keys=True)  # NaN != NaN as floats
