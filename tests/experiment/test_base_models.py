"""An experiment may start from another's base models: a post-training variant on the same pretrained models."""

import json
from dataclasses import replace

import pytest

from safepretrain.errors import UserError
from safepretrain.experiment import stages
from safepretrain.experiment.config import tiny
from safepretrain.experiment.run import grid, run_experiment
from safepretrain.experiment.stages import Layout, eval_dir
from safepretrain.io import sha256_file


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """An experiment that stopped after its base models (raw and SRP pretraining, tiny world)."""
    cfg = replace(tiny(), out=str(tmp_path_factory.mktemp("base")), recipes=("raw", "srp"), until="base")
    run_experiment(cfg)
    return cfg


def test_a_post_training_variant_reuses_the_base_models_and_builds_only_what_follows(pretrained, tmp_path,
                                                                                     monkeypatch):
    variant = replace(pretrained, out=str(tmp_path / "variant"), base_models=pretrained.out, recovery_chats=4,
                      until="post")
    train_stage = stages.train_stage

    def no_pretraining(kind, out, *args):
        if kind == "pretrain" and not (out / "model" / "config.json").is_file():
            pytest.fail("a base model was trained again")
        return train_stage(kind, out, *args)

    monkeypatch.setattr(stages, "train_stage", no_pretraining)
    run_experiment(variant)
    mine, theirs = Layout(variant), Layout(pretrained)
    for cell in grid(variant):
        model = "model/model.safetensors"
        assert sha256_file(mine.pretrain(cell) / model) == sha256_file(theirs.pretrain(cell) / model)
        assert not (mine.pretrain(cell) / "checkpoints").exists()
        # the base model's evaluation came along (same evaluation settings); post-training is this experiment's own
        assert (eval_dir(variant, cell, "pretrained") / "metrics.json").is_file()
        assert (eval_dir(variant, cell, "post") / "metrics.json").is_file()
        manifest = json.loads((mine.cell(cell) / "manifest.json").read_text())
        assert manifest["experiment"]["base_models"] == pretrained.out
    sft = [json.loads(line) for line in stages.make_sft_data(variant, 0, "srp").read_text().splitlines()]
    assert sum("prefill" in chat["messages"][-1] for chat in sft) == 4


def test_base_models_pretrained_another_way_are_refused_with_the_fields_that_differ(pretrained, tmp_path):
    other = replace(pretrained, out=str(tmp_path / "other"), base_models=pretrained.out,
                    pretrain_tokens=pretrained.pretrain_tokens * 2)
    with pytest.raises(UserError, match=f"pretrain_tokens: {pretrained.pretrain_tokens} there"):
        run_experiment(other)
    assert not (tmp_path / "other").exists()  # refused before the folder was claimed
    overridden = replace(other, pretrain_tokens=pretrained.pretrain_tokens,
                         train_overrides={"pretrain": ("optim.micro_batch=4",)})
    with pytest.raises(UserError, match="train_overrides.pretrain"):
        run_experiment(overridden)
    with pytest.raises(UserError, match="not an experiment folder"):
        run_experiment(replace(other, base_models=str(tmp_path)))


def test_an_evaluation_setting_of_its_own_redoes_only_the_base_models_evaluation(pretrained, tmp_path):
    variant = replace(pretrained, out=str(tmp_path / "v"), base_models=pretrained.out, eval_items=4)
    run_experiment(variant)
    for cell in grid(variant):
        metrics = json.loads((eval_dir(variant, cell, "pretrained") / "metrics.json").read_text())
        assert metrics["conditions"]["greedy/direct"]["guarded"]["heldout_unsafe"]["unsafe_action_rate"]["n"] == 4
