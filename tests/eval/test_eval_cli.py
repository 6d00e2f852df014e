"""``safepretrain eval`` on prompt suites from the command line: results, a manifest, and resume."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM

from safepretrain.train.models import preset_config


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    LlamaForCausalLM(preset_config("tiny", len(tokenizer))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(*args):
    return subprocess.run([sys.executable, "-m", "safepretrain", "eval", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_a_builtin_suite_is_answered_judged_and_recorded_with_a_manifest(model_dir, tmp_path):
    out = tmp_path / "advbench"
    result = run(model_dir, "--suite", "advbench", "--max-items", "3", "--max-new-tokens", "8", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and "non_refusal_rate" in metrics
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["suite"] == "advbench" and manifest["suite_wheels"]["pyrit"] == "1.1.0"
    assert manifest["model"]["sha256"]["model.safetensors"] and "samples.jsonl" in manifest["files"]
    samples = (out / "samples.jsonl").read_text()
    again = run(model_dir, "--suite", "advbench", "--max-items", "3", "--max-new-tokens", "8", "--out", out)
    assert again.returncode == 0 and (out / "samples.jsonl").read_text() == samples  # resumed: nothing recomputed


def test_a_prompt_file_with_a_bad_line_is_a_clear_error(model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"text": "no prompt"}\n')
    result = run(model_dir, "--suite", "prompts", "--file", prompts, "--out", tmp_path / "o")
    assert result.returncode == 2 and "line 2" in result.stderr and "Traceback" not in result.stderr


def test_the_overrefusal_suite_reports_refusals_of_safe_prompts_apart_and_the_benign_suite_utility(model_dir, tmp_path):
    out = tmp_path / "xs"
    result = run(model_dir, "--suite", "overrefusal", "--max-items", "12", "--max-new-tokens", "8", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    labels = metrics["by_label"]
    assert set(labels) == {"safe", "unsafe"} and labels["safe"]["refusal_rate"]["n"] + labels["unsafe"]["refusal_rate"]["n"] == 12
    assert metrics["over_refusal_rate"] == labels["safe"]["refusal_rate"]
    out = tmp_path / "benign"
    result = run(model_dir, "--suite", "benign", "--max-items", "5", "--max-new-tokens", "8", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["utility"]["n"] == 5 and metrics["utility"]["count"] == 0  # a random model answers nothing


def test_the_world_suite_takes_the_pretext_attack_and_refuses_an_unknown_one(model_dir, tiny_world_dir, tmp_path):
    out = tmp_path / "world"
    args = (model_dir, "--suite", "medsafetyworld", "--world", tiny_world_dir, "--max-items", "2",
            "--max-new-tokens", "6", "--out", out)
    result = run(*args, "--attack", "pretext")
    assert result.returncode == 0, result.stderr
    splits = json.loads((out / "metrics.json").read_text())["conditions"]["greedy/pretext"]["guarded"]
    assert set(splits) == {"seen_unsafe", "heldout_unsafe"}  # a pretext disguises harmful requests only
    wrong = run(*args, "--attack", "jailbreak")
    assert wrong.returncode == 2 and "attacks" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_world_suite_adds_the_guard_that_asks_for_reflections(model_dir, tiny_world_dir, tmp_path):
    out = tmp_path / "asked"
    result = run(model_dir, "--suite", "medsafetyworld", "--world", tiny_world_dir, "--max-items", "2",
                 "--max-new-tokens", "6", "--attack", "direct", "--reflect-every", "2", "--reflect-on-request",
                 "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["conditions"]) == {"greedy/direct", "reflect/direct"}
    assert metrics["config"]["reflect_every"] == 2 and metrics["config"]["reflect_on_request"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["reflect_on_request"] is True
