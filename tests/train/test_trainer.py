"""The trainer: it learns, resumes to the same weights, follows the curriculum, and refuses bad configs clearly."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from safepretrain.errors import UserError
from safepretrain.train.config import build_config
from safepretrain.train.data import Tokenization, load_stream
from safepretrain.train.trainer import TrainingStopped, train


def unigram_entropy(stream) -> float:
    """Nats per target token of the best context-free model: a trained LM must beat it to be using context."""
    counts = np.bincount(stream.tokens[stream.targets]).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def weights(run_dir):
    return load_file(run_dir / "model" / "model.safetensors")


def test_fifty_steps_beat_the_unigram_entropy(tiny_run, tokenizer, tiny_world_dir, tmp_path):
    cfg = tiny_run(max_steps=50, **{"optim.lr": 3e-3})
    result = train(cfg, show_progress=False)
    stream = load_stream([tiny_world_dir / "corpus.jsonl"], tokenizer, Tokenization(), tmp_path / "cache")
    assert result.final_loss < unigram_entropy(stream) - 0.3
    records = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 50]
    assert records[-1]["loss"] < records[0]["loss"]
    assert (result.out / "loss.png").stat().st_size > 0
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and "model.safetensors" in manifest["files"]
    assert manifest["hardware"]["torch_cpu_capability"]  # weights depend on the kernels torch picked


NEW_TAG = {"optim.new_tokens": "['<|harmful|>']"}


@pytest.mark.parametrize("options", [{}, NEW_TAG], ids=["plain", "new-token-rows"])
def test_a_killed_run_resumes_to_the_same_weights(tiny_run, tmp_path, options):
    straight = train(tiny_run(out=tmp_path / "straight", **options), show_progress=False)

    def crash(step, loss):
        if step == 6:  # after the step-4 checkpoint, before the step-8 one: steps 5-6 are lost and redone
            raise RuntimeError("simulated crash")

    cfg = tiny_run(out=tmp_path / "crashed", **options)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, on_step=crash, show_progress=False)
    resumed = train(cfg, resume=True, show_progress=False)
    assert resumed.steps == straight.steps and resumed.final_loss == straight.final_loss
    a, b = weights(straight.out), weights(resumed.out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]  # the lost steps' log lines were dropped, not duplicated


def _interrupt_at(step_to_stop: int):
    def interrupt(step, loss):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)

    return interrupt


def test_ctrl_c_checkpoints_at_a_step_boundary(tiny_run):
    cfg = tiny_run()
    with pytest.raises(TrainingStopped, match="stopped at step 3 of 12"):
        train(cfg, on_step=_interrupt_at(3), show_progress=False)
    assert (Path(cfg.out) / "checkpoints" / "step-00000003").is_dir()
    assert train(cfg, resume=True, show_progress=False).steps == 12


def test_curriculum_starts_the_intervened_stream_at_its_fraction(tiny_run, tiny_world_dir):
    cfg = tiny_run(**{"data.intervened": f"[{tiny_world_dir / 'sft.jsonl'}]", "curriculum.start": 0.5})
    result = train(cfg, show_progress=False)
    records = [json.loads(line) for line in (result.out / "metrics.jsonl").read_text().splitlines()]
    dose = {r["step"]: r["intervened_tokens"] for r in records}
    assert dose[4] == 0 and dose[12] == 6 * 8 * 64  # steps 7..12 read only the intervened stream (mix = 1)
    assert result.intervened_tokens == 6 * 8 * 64


def test_sft_continues_from_a_pretrained_model(tiny_run, tiny_world_dir, tmp_path):
    base = train(tiny_run(out=tmp_path / "base"), show_progress=False)
    cfg = tiny_run("sft", out=tmp_path / "sft", **{"model.name": base.model_dir, "model.tokenizer": "null",
                                                   "data.train": f"[{tiny_world_dir / 'sft.jsonl'}]"})
    result = train(cfg, show_progress=False)
    assert result.steps == 12 and (result.model_dir / "tokenizer.json").is_file()


def test_a_token_added_to_a_pretrained_vocabulary_learns_at_its_own_rate(tiny_run, tokenizer, tmp_path):
    base = train(tiny_run(out=tmp_path / "base", max_steps=4), show_progress=False)
    tag = tokenizer.convert_tokens_to_ids("<|harmful|>")
    continued = tiny_run(out=tmp_path / "continued", max_steps=4, **{"model.name": base.model_dir,
                                                                    "optim.lr": 1e-5, **NEW_TAG})
    before = weights(base.out)["model.embed_tokens.weight"]
    after = weights(train(continued, show_progress=False).out)["model.embed_tokens.weight"]
    moved = (after - before).abs().max(dim=1).values
    # Adam moves a weight by about lr per step: ~1e-2 for the tag's row, ~1e-5 for the rest.
    assert moved[tag] > 1e-2 and moved[tag] > 100 * moved[torch.arange(len(moved)) != tag].max()


def test_new_tokens_must_be_single_tokens(tiny_run):
    with pytest.raises(UserError, match="optim.new_tokens: 'not one token' is not a single token"):
        train(tiny_run(**{"optim.new_tokens": "['not one token']"}), show_progress=False)


def test_a_run_from_before_a_config_field_existed_still_resumes(tiny_run):
    import yaml

    cfg = tiny_run(max_steps=4)
    saved = Path(cfg.out) / "config.yaml"
    with pytest.raises(TrainingStopped):
        train(cfg, on_step=_interrupt_at(2), show_progress=False)
    values = yaml.safe_load(saved.read_text())
    del values["optim"]["new_token_lr"]  # as written by a version without the field
    saved.write_text(yaml.safe_dump(values))
    assert train(cfg, resume=True, show_progress=False).steps == 4


def test_finetune_has_attack_defaults():
    cfg = build_config("finetune")
    assert cfg.max_steps == 200 and cfg.optim.lr == 1e-4 and cfg.optim.min_lr_ratio == 1.0


@pytest.mark.parametrize("override, message", [
    ({"optim.lr": -1}, "field 'optim.lr': Input should be greater than 0"),
    ({"optim.learning_rate": 1}, "field 'optim.learning_rate': Unexpected keyword argument"),
    ({"curriculum.start": 1.5}, "field 'curriculum.start': Input should be less than or equal to 1"),
])
def test_bad_config_names_the_field(tiny_run, override, message):
    with pytest.raises(UserError, match=message):
        tiny_run(**override)


def test_unknown_model_preset(tiny_run):
    with pytest.raises(UserError, match="neither a preset .* nor a saved model folder"):
        train(tiny_run(**{"model.name": "huge"}), show_progress=False)


def test_vocabulary_mismatch_between_tokenizer_and_model(tiny_run, tmp_path):
    from transformers import LlamaForCausalLM

    from safepretrain.train.models import tiny

    LlamaForCausalLM(tiny(vocab_size=64)).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(UserError, match="vocabulary mismatch: the tokenizer has .* only 64 embeddings"):
        train(tiny_run(**{"model.name": tmp_path / "small-vocab"}), show_progress=False)


def test_a_previous_run_is_never_overwritten_unless_asked(tiny_run):
    cfg = tiny_run(max_steps=2)
    train(cfg, show_progress=False)
    with pytest.raises(UserError, match="not empty; pass --resume .* --overwrite"):
        train(cfg, show_progress=False)
    assert train(cfg, overwrite=True, show_progress=False).steps == 2


def test_resume_refuses_a_changed_config(tiny_run):
    train(tiny_run(max_steps=4), show_progress=False)
    with pytest.raises(UserError, match="fields changed: optim.lr"):
        train(tiny_run(max_steps=4, **{"optim.lr": 1e-2}), resume=True, show_progress=False)


def test_corrupt_checkpoint_is_named(tiny_run):
    cfg = tiny_run(max_steps=4)
    result = train(cfg, show_progress=False)
    (result.out / "checkpoints" / "step-00000004" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="checkpoint .*step-00000004 is corrupt"):
        train(cfg, resume=True, show_progress=False)
