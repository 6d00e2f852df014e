"""An experiment may reuse another's finished stages: a variant on the same pretrained models builds only what its
config changes."""

import json
import time
from dataclasses import replace

import pytest

from safepretrain.errors import UserError
from safepretrain.experiment import stages
from safepretrain.experiment.config import tiny
from safepretrain.experiment.reuse import changes
from safepretrain.experiment.run import grid, run_experiment
from safepretrain.experiment.stages import Layout, eval_dir
from safepretrain.io import sha256_file

MODEL = "model/model.safetensors"


@pytest.fixture(scope="module")
def post_trained(tmp_path_factory):
    """An experiment that stopped after post-training (raw and SRP, tiny world)."""
    cfg = replace(tiny(), out=str(tmp_path_factory.mktemp("source")), recipes=("raw", "srp"), until="post")
    run_experiment(cfg)
    return cfg


@pytest.fixture
def trained_here(monkeypatch):
    """The kinds of training stages that ran (not those found finished)."""
    ran, train_stage = [], stages.train_stage

    def recording(kind, out, *args):
        if not (out / "model" / "config.json").is_file():
            ran.append(kind)
        return train_stage(kind, out, *args)

    monkeypatch.setattr(stages, "train_stage", recording)
    return ran


def test_a_post_training_variant_reuses_the_base_models_and_builds_what_its_change_touches(post_trained, tmp_path,
                                                                                           trained_here):
    variant = replace(post_trained, out=str(tmp_path / "variant"), reuse_from=post_trained.out, recovery_chats=4,
                      eval_items=4)
    run_experiment(variant)
    assert trained_here == ["sft", "sft"]  # no pretraining (the variant stops after post-training, as its source)
    mine, theirs = Layout(variant), Layout(post_trained)
    for cell in grid(variant):
        assert sha256_file(mine.pretrain(cell) / MODEL) == sha256_file(theirs.pretrain(cell) / MODEL)
        assert sha256_file(mine.sft(cell) / MODEL) != sha256_file(theirs.sft(cell) / MODEL)
        assert not (mine.pretrain(cell) / "checkpoints").exists()
        # another eval_items: the base model's evaluation is redone here too
        metrics = json.loads((eval_dir(variant, cell, "pretrained") / "metrics.json").read_text())
        assert metrics["conditions"]["greedy/direct"]["guarded"]["heldout_unsafe"]["unsafe_action_rate"]["n"] == 4
        manifest = json.loads((mine.cell(cell) / "manifest.json").read_text())
        assert manifest["experiment"]["reuse_from"] == post_trained.out
    sft = [json.loads(line) for line in stages.make_sft_data(variant, 0, "srp").read_text().splitlines()]
    assert sum("prefill" in chat["messages"][-1] for chat in sft) == 4


def test_an_attack_variant_reuses_post_training_and_its_evaluation(post_trained, tmp_path, trained_here):
    variant = replace(post_trained, out=str(tmp_path / "harmful"), reuse_from=post_trained.out,
                      finetune_attack="harmful", until="attack")
    run_experiment(variant)
    assert trained_here == ["finetune", "finetune"]
    for cell in grid(variant):
        assert (eval_dir(variant, cell, "post") / "metrics.json").read_text() == \
               (eval_dir(post_trained, cell, "post") / "metrics.json").read_text()
        assert (eval_dir(variant, cell, "finetuned") / "metrics.json").is_file()


def test_an_evaluation_variant_reuses_every_model_and_evaluates_again(post_trained, tmp_path, trained_here):
    variant = replace(post_trained, out=str(tmp_path / "unasked"), reuse_from=post_trained.out,
                      reflect_on_request=False)
    run_experiment(variant)
    assert trained_here == []
    srp = grid(variant)[1]

    def direct_answers(cfg) -> list[str]:
        samples = map(json.loads, (eval_dir(cfg, srp, "post") / "samples.jsonl").read_text().splitlines())
        return [s["text"] for s in samples if s["key"].startswith("gen/reflect/direct/")]

    asked, unasked = direct_answers(post_trained), direct_answers(variant)
    assert asked and all(t.startswith("<|reflect|>") for t in asked) and asked != unasked
    # a base model answers text prompts, where no request verdict is asked: its evaluation is theirs
    assert (eval_dir(variant, srp, "pretrained") / "metrics.json").read_bytes() == \
           (eval_dir(post_trained, srp, "pretrained") / "metrics.json").read_bytes()


def test_a_change_to_one_recipes_data_reuses_the_other_recipes_models(post_trained, tmp_path, trained_here):
    variant = replace(post_trained, out=str(tmp_path / "dropout"), reuse_from=post_trained.out,
                      reflection_dropout=0.3, until="base")
    run_experiment(variant)
    assert trained_here == ["pretrain"]  # SRP's: its data changed; raw's model is theirs
    mine, theirs = Layout(variant), Layout(post_trained)
    raw, srp = grid(variant)
    assert sha256_file(mine.pretrain(raw) / MODEL) == sha256_file(theirs.pretrain(raw) / MODEL)
    assert sha256_file(mine.pretrain(srp) / MODEL) != sha256_file(theirs.pretrain(srp) / MODEL)
    assert mine.corpus(0, "reflect").read_bytes() != theirs.corpus(0, "reflect").read_bytes()
    assert (mine.world(0) / "corpus.jsonl").read_bytes() == (theirs.world(0) / "corpus.jsonl").read_bytes()


def test_a_change_to_training_reuses_the_worlds_tokenizers_and_data(post_trained, tmp_path, trained_here):
    variant = replace(post_trained, out=str(tmp_path / "longer"), reuse_from=post_trained.out,
                      pretrain_tokens=post_trained.pretrain_tokens // 2, until="base")
    run_experiment(variant)
    assert trained_here == ["pretrain", "pretrain"]
    mine, theirs = Layout(variant), Layout(post_trained)
    for piece in ("worlds/seed0/manifest.json", "tokenizers/seed0/tokenizer.json", "data/seed0/reflect.jsonl",
                  "data/seed0/reflect.tokens.json"):
        assert (mine.root / piece).read_bytes() == (theirs.root / piece).read_bytes()


def test_another_training_seed_trains_the_same_worlds_again(post_trained, tmp_path, trained_here):
    variant = replace(post_trained, out=str(tmp_path / "draw"), reuse_from=post_trained.out, recipes=("raw",),
                      training_seed=7, until="base")
    run_experiment(variant)
    assert trained_here == ["pretrain"]
    mine, theirs = Layout(variant), Layout(post_trained)
    for piece in ("worlds/seed0/corpus.jsonl", "tokenizers/seed0/tokenizer.json", "data/seed0/raw.jsonl"):
        assert (mine.root / piece).read_bytes() == (theirs.root / piece).read_bytes()
    (cell,) = grid(variant)
    assert sha256_file(mine.pretrain(cell) / MODEL) != sha256_file(theirs.pretrain(cell) / MODEL)
    assert "seed: 7" in (mine.pretrain(cell) / "config.yaml").read_text()


def test_more_post_training_material_in_the_world_reuses_its_pretrained_models(post_trained, tmp_path,
                                                                                trained_here):
    # n_harmful_finetune sizes the recovery splits, written after the corpus and SFT chats: the world is
    # generated again, the tokenizer, data and pretrained models are theirs, post-training and evaluation are redone
    variant = replace(post_trained, out=str(tmp_path / "more"), reuse_from=post_trained.out,
                      world={"n_harmful_finetune": 40}, recovery_errors=30)
    started = time.time()
    run_experiment(variant)
    assert trained_here == ["sft", "sft"]
    mine, theirs = Layout(variant), Layout(post_trained)
    assert len((mine.world(0) / "error_recovery.jsonl").read_text().splitlines()) == 40  # theirs: 20
    for piece in ("worlds/seed0/corpus.jsonl", "worlds/seed0/sft.jsonl", "tokenizers/seed0/tokenizer.json",
                  "data/seed0/reflect.jsonl"):
        assert (mine.root / piece).read_bytes() == (theirs.root / piece).read_bytes()
    for cell in grid(variant):
        assert sha256_file(mine.pretrain(cell) / MODEL) == sha256_file(theirs.pretrain(cell) / MODEL)
        # the base model evaluated here, on this world's items (a copy would keep the source's older mtime)
        assert (mine.pretrain(cell) / "eval-text" / "samples.jsonl").stat().st_mtime >= started
    with pytest.raises(UserError, match="world: {} there, {'n_harmful_finetune': 40, 'pretext_share': 0.5} here"):
        run_experiment(replace(variant, out=str(tmp_path / "other"),  # pretext_share changes the corpus
                               world={"n_harmful_finetune": 40, "pretext_share": 0.5}))


def test_another_share_of_cause_errors_among_the_error_recoveries_reuses_the_base_models_and_their_evaluation(
        post_trained, tmp_path, trained_here):
    # error_recovery.jsonl is the world's last split: evaluation items stay, only post-training is redone
    variant = replace(post_trained, out=str(tmp_path / "cause"), reuse_from=post_trained.out,
                      world={"error_recovery_cause_share": 0.5}, recovery_errors=10)
    run_experiment(variant)
    assert trained_here == ["sft", "sft"]
    mine, theirs = Layout(variant), Layout(post_trained)
    recoveries = "worlds/seed0/error_recovery.jsonl"
    assert (mine.root / recoveries).read_bytes() != (theirs.root / recoveries).read_bytes()
    for piece in ("worlds/seed0/eval/heldout_unsafe.jsonl", "worlds/seed0/eval/reflection.jsonl"):
        assert (mine.root / piece).read_bytes() == (theirs.root / piece).read_bytes()
    for cell in grid(variant):
        assert sha256_file(mine.pretrain(cell) / MODEL) == sha256_file(theirs.pretrain(cell) / MODEL)
        samples = "eval-text/samples.jsonl"
        assert (mine.pretrain(cell) / samples).read_bytes() == (theirs.pretrain(cell) / samples).read_bytes()
        assert (mine.pretrain(cell) / samples).stat().st_mtime == (theirs.pretrain(cell) / samples).stat().st_mtime


def test_stages_of_other_worlds_are_refused_with_the_fields_that_differ(post_trained, tmp_path):
    other = replace(post_trained, out=str(tmp_path / "other"), reuse_from=post_trained.out,
                    world={"pretext_share": 0.5})
    with pytest.raises(UserError, match="world: {} there, {'pretext_share': 0.5} here"):
        run_experiment(other)
    assert not (tmp_path / "other").exists()  # refused before the folder was claimed
    with pytest.raises(UserError, match="segment_words"):  # evaluation reads it too: nothing is reused
        run_experiment(replace(other, world={}, segment_words=12))
    with pytest.raises(UserError, match="not an experiment folder"):
        run_experiment(replace(other, reuse_from=str(tmp_path)))


def test_what_each_pretraining_field_changes():
    assert changes(["tag_p"], "pretrain", {"reflect"}) == [] and changes(["tag_p"], "corpus", {"tags"}) == ["tag_p"]
    assert changes(["vocab_size"], "world") == [] and changes(["vocab_size"], "corpus", {"raw"}) == ["vocab_size"]
    assert changes(["lr"], "corpus", {"reflect"}) == [] and changes(["lr"], "pretrain", {"raw"}) == ["lr"]
    assert changes(["a_field_added_later"], "world") == ["a_field_added_later"]
