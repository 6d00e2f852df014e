"""The command line: help everywhere, and user mistakes give one clear line and exit code 2."""

import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "safepretrain", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", [[], ["world"], ["world", "generate"], ["world", "audit"], ["world", "judge"],
                                     ["world", "show"], ["world", "breakdown"], ["tokenizer", "train"], ["model", "presets"],
                                     ["model", "import-smollm2"], ["train", "pretrain"], ["train", "sft"],
                                     ["train", "finetune"], ["intervene"], ["scorer", "train"], ["report-card"],
                                     ["srp-sft"], ["generate"], ["eval"], ["experiment", "run"],
                                     ["experiment", "compare"], ["serve"],
                                     ["playground"]])
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_version():
    assert run("--version").stdout.startswith("safepretrain ")


def test_generate_audit_judge_end_to_end(tmp_path):
    out = tmp_path / "w"
    assert run("world", "generate", "--preset", "tiny", "--out", out).returncode == 0
    audit = run("world", "audit", out)
    assert audit.returncode == 0 and "PASS" in audit.stdout and "FAIL" not in audit.stdout
    items = [json.loads(line) for line in (out / "eval" / "utility.jsonl").read_text().splitlines()]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": i["id"], "answer": i["reference"]}) + "\n" for i in items))
    judged = run("world", "judge", out, "--split", "utility", "--predictions", preds)
    assert judged.returncode == 0, judged.stderr
    metrics = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert metrics["utility_accuracy"]["rate"] == 1.0
    assert run("world", "show", out, "--split", "heldout_unsafe", "-n", "1").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["world", "generate", "--preset", "huge", "--out", "{tmp}/x"], "unknown preset 'huge'"),
    (["world", "generate", "--preset", "tiny", "--out", "{tmp}"], "not empty"),
    (["world", "generate", "--preset", "tiny", "--set", "pretexts=1", "--out", "{tmp}/x"], "unknown fields ['pretexts']"),
    (["world", "generate", "--preset", "tiny", "--set", "pretext_share=2", "--out", "{tmp}/x"],
     "pretext_share must be in [0, 1]"),
    (["world", "generate", "--preset", "tiny", "--set", "chat_share=-1", "--out", "{tmp}/x"],
     "chat_share must be in [0, 1]"),
    (["intervene", "{tmp}/something", "--recipe", "reflect", "--reflection-dropout", "1", "--out", "{tmp}/y"],
     "--reflection-dropout must be in [0, 1)"),
    (["world", "audit", "{tmp}/missing"], "no such world folder"),
    (["world", "audit", "{tmp}"], "not a complete world"),
    (["serve", "{tmp}/missing"], "no model here"),
    (["generate", "{tmp}/missing", "--prompt", "hi", "--device", "gpu0"], "name one as torch does"),
    (["eval", "{tmp}/missing", "--out", "{tmp}/e", "--device", "gpu0"], "name one as torch does"),
    (["serve", "a={tmp}/x", "a={tmp}/y"], "two models are called 'a'"),
])
def test_user_mistakes_exit_2_with_a_clear_message(tmp_path, args, message):
    (tmp_path / "something").write_text("x")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_generate_sets_fields_of_the_preset(tmp_path):
    out = tmp_path / "w"
    result = run("world", "generate", "--preset", "tiny", "--set", "pretext_share=0.5", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["config"]["pretext_share"] == 0.5


def test_judge_errors_name_the_split_or_the_line(tiny_world_dir, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "utility-00000", "answer": "x"}\n{oops\n')
    bad_line = run("world", "judge", tiny_world_dir, "--split", "utility", "--predictions", preds)
    assert bad_line.returncode == 2 and "p.jsonl, line 2" in bad_line.stderr
    bad_split = run("world", "judge", tiny_world_dir, "--split", "nope", "--predictions", preds)
    assert bad_split.returncode == 2 and "unknown split 'nope'" in bad_split.stderr


def test_breakdown_prints_groups_and_leaks_and_writes_markdown(tiny_world_dir, tmp_path):
    items = [json.loads(line) for line in (tiny_world_dir / "eval" / "heldout_unsafe.jsonl").read_text().splitlines()]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({
        "key": f"gen/reflect/prefill/{i['id']}", "split": "heldout_unsafe", "id": i["id"], "prefill": "give ana",
        "text": " zoane 100 mg.", "reflections": ["safe"], "flagged": False, "outcome": "unsafe"}) + "\n" for i in items))
    out = tmp_path / "breakdown.md"
    result = run("world", "breakdown", samples, "--world", tiny_world_dir, "--condition", "reflect/prefill",
                 "--by", "patient", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "leaked heldout_unsafe-" in result.stdout and "[reflections: safe]" in result.stdout
    assert f"| all | {len(items)} |" in out.read_text()
    wrong = run("world", "breakdown", samples, "--world", tiny_world_dir, "--by", "dose")
    assert wrong.returncode == 2 and "unknown attribute 'dose'" in wrong.stderr
