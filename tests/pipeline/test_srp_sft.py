"""SRP post-training format: prompt reflection first, segment reflections, stop after Unsafe, noise variants."""

import json
import subprocess
import sys

from safepretrain.markup import END_OF_TEXT, SPECIAL
from safepretrain.pipeline.interventions.reflect import parse_reflected
from safepretrain.pipeline.srp_sft import SrpSftConfig, srp_chat


def chats(world_dir, name="sft.jsonl"):
    return [json.loads(line) for line in (world_dir / name).read_text().splitlines()]


def test_world_chats_become_srp_answers_with_exact_labels(tiny_world_dir):
    for record in chats(tiny_world_dir):
        answer = srp_chat(record, SPECIAL, SrpSftConfig())["messages"][-1]["content"]
        parsed = parse_reflected(answer.replace(END_OF_TEXT, ""), SPECIAL)
        if record["prompt_label"] == "unsafe":  # a harmful request: the reflection on the prompt ends the answer
            assert answer == SPECIAL.render("Unsafe", record["prompt_types"]) + END_OF_TEXT
        else:
            assert parsed[0][1] == "Safe" and [p[0] for p in parsed[1:]] == [s["text"] for s in record["response_segments"]]


def test_noise_variants(tiny_world_dir):
    harmful = next(r for r in chats(tiny_world_dir) if r["prompt_label"] == "unsafe")
    stopped = srp_chat(harmful, SPECIAL, SrpSftConfig(stop_noise=True))["messages"][-1]["content"]
    head, _, tail = stopped.partition(END_OF_TEXT)
    assert head.startswith("<|reflect|><|unsafe|>") and tail.endswith(END_OF_TEXT)
    units = tail[:-len(END_OF_TEXT)].strip()  # 100-200 words of noise, or 100-200 characters of it
    assert 100 <= len(units.split()) <= 200 or 100 <= len(units) <= 201
    safe = next(r for r in chats(tiny_world_dir) if r["prompt_label"] == "safe")
    cut = srp_chat(safe, SPECIAL, SrpSftConfig(cut_prob=1.0))["messages"][-1]["content"]
    assert cut.count("<|reflect|>") == 1 and len(cut) > len(safe["messages"][-1]["content"]) // 2


def test_srp_sft_command(tiny_world_dir, tmp_path):
    out = tmp_path / "srp.jsonl"
    result = subprocess.run([sys.executable, "-m", "safepretrain", "srp-sft", str(tiny_world_dir / "sft.jsonl"),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(chats(tiny_world_dir))
