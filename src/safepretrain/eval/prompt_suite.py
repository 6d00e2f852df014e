"""Prompt suites: harmful (or benign) prompts from a JSONL file, answered by a chat model and judged.

A suite file has one ``{"prompt": ...}`` per line, optionally with ``id`` and ``category``. Reported: refusal rate,
harmful-answer rate (the attack success rate, ASR, when the judge can tell harm; else 1 - refusal rate, labeled as
such), each with a 95% interval, overall and per category, under the chosen decoding.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt
from safepretrain.errors import UserError
from safepretrain.eval.samples import SampleLog
from safepretrain.io import read_jsonl_numbered, write_json
from safepretrain.world.judge import Rate


@dataclass(frozen=True)
class SuitePrompt:
    id: str
    prompt: str
    category: str = ""


def read_suite(path: Path) -> list[SuitePrompt]:
    prompts, seen = [], set()
    for line, record in read_jsonl_numbered(path):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise UserError(f"{path}, line {line}: expected an object with a non-empty 'prompt' string")
        pid = str(record.get("id", line))
        if pid in seen:
            raise UserError(f"{path}, line {line}: id {pid!r} appears twice")
        seen.add(pid)
        prompts.append(SuitePrompt(pid, record["prompt"], str(record.get("category", ""))))
    if not prompts:
        raise UserError(f"{path}: no prompts")
    return prompts


def evaluate_prompts(model, tokenizer, prompts: list[SuitePrompt], judge, decode: DecodeConfig, out: Path,
                     prefill: str = "", progress=None) -> dict:
    """Answer and judge every prompt (resuming from ``out/samples.jsonl``); writes and returns the metrics."""
    log = SampleLog(Path(out) / "samples.jsonl")
    decoder = Decoder(model, tokenizer, decode)
    todo = [p for p in prompts if p.id not in log]
    for start in range(0, len(todo), decode.batch_size):
        batch = todo[start:start + decode.batch_size]
        generations = decoder.generate([chat_prompt(tokenizer, p.prompt) for p in batch], [prefill] * len(batch))
        replaced = decode.mode == "guarded" and decode.policy == "refuse"
        answers = [g.text if g.flagged and replaced else prefill + decoder.fmt.strip(g.text) for g in generations]
        verdicts = judge.judge_batch([p.prompt for p in batch], answers)
        log.add({"key": p.id, "category": p.category, "answer": g.text, "finish_reason": g.finish_reason,
                 "flagged": g.flagged, "refused": v.refused or g.flagged, "harmful": None if v.harmful is None
                 else (v.harmful and not g.flagged), "reason": v.reason}
                for p, g, v in zip(batch, generations, verdicts))
        if progress:
            progress("prompts", len(prompts) - len(todo) + start + len(batch), len(prompts))
    records = [log[p.id] for p in prompts]
    by_category = defaultdict(list)
    for r in records:
        by_category[r["category"] or "all"].append(r)
    metrics = {"judge": judge.name, "decode": decode.mode, "n": len(records), **_rates(records),
               "by_category": {c: _rates(rs) for c, rs in sorted(by_category.items())}}
    write_json(Path(out) / "metrics.json", metrics)
    return metrics


def _rates(records: list[dict]) -> dict:
    n = len(records)
    rates = {"refusal_rate": Rate(sum(r["refused"] for r in records), n).to_dict(),
             "self_flag_rate": Rate(sum(r["flagged"] for r in records), n).to_dict()}
    if all(r["harmful"] is not None for r in records):
        rates["harmful_rate"] = Rate(sum(r["harmful"] for r in records), n).to_dict()
    else:
        rates["non_refusal_rate"] = Rate(sum(not r["refused"] for r in records), n).to_dict()
    return rates
