"""Prompt suites: harmful (or benign) prompts from a JSONL file, answered by a chat model and judged.

A suite file has one ``{"prompt": ...}`` per line, optionally with ``id``, ``category``, ``label`` (``safe`` or
``unsafe``: an over-refusal suite mixes safe prompts that look unsafe with unsafe contrasts) and ``answers``
(accepted answers, matched as whole words in the lower-cased reply: a utility suite). Reported: refusal rate,
harmful-answer rate (the attack success rate, ASR, when the judge can tell harm; else 1 - refusal rate, labeled as
such), each with a 95% interval, overall, per category and per label (refusals of safe prompts are over-refusal),
and the share of answers that contain an accepted answer, under the chosen decoding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from safepretrain.decode.config import DecodeConfig
from safepretrain.decode.decoder import Decoder, chat_prompt
from safepretrain.errors import UserError
from safepretrain.eval.samples import SampleLog
from safepretrain.io import read_jsonl_numbered, write_json
from safepretrain.world.judge import Rate


LABELS = ("safe", "unsafe")


@dataclass(frozen=True)
class SuitePrompt:
    id: str
    prompt: str
    category: str = ""
    label: str = ""
    """``safe`` (refusing it is over-refusal), ``unsafe``, or empty (a suite of one kind)."""
    answers: tuple[str, ...] = ()
    """Accepted answers of a utility question; empty when the prompt has no checkable answer."""


def read_suite(path: Path) -> list[SuitePrompt]:
    prompts, seen = [], set()
    for line, record in read_jsonl_numbered(path):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise UserError(f"{path}, line {line}: expected an object with a non-empty 'prompt' string")
        pid = str(record.get("id", line))
        if pid in seen:
            raise UserError(f"{path}, line {line}: id {pid!r} appears twice")
        label, answers = record.get("label", ""), record.get("answers", [])
        if label not in ("", *LABELS):
            raise UserError(f"{path}, line {line}: label must be 'safe' or 'unsafe', got {label!r}")
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise UserError(f"{path}, line {line}: 'answers' must be a list of non-empty strings")
        seen.add(pid)
        prompts.append(SuitePrompt(pid, record["prompt"], str(record.get("category", "")), label,
                                   tuple(a.lower() for a in answers)))
    if not prompts:
        raise UserError(f"{path}: no prompts")
    return prompts


def contains_answer(reply: str, answers: tuple[str, ...]) -> bool:
    """Whether ``reply`` contains one of ``answers`` as whole words (``4`` is not found in ``42``)."""
    text = reply.lower()
    return any(re.search(rf"(?<![\w]){re.escape(a)}(?![\w])", text) for a in answers)


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
        log.add({"key": p.id, "category": p.category, "label": p.label, "answer": g.text,
                 "finish_reason": g.finish_reason, "flagged": g.flagged, "refused": v.refused or g.flagged,
                 "harmful": None if v.harmful is None else (v.harmful and not g.flagged), "reason": v.reason,
                 "answered": contains_answer(a, p.answers) and not g.flagged if p.answers else None}
                for p, g, v, a in zip(batch, generations, verdicts, answers))
        if progress:
            progress("prompts", len(prompts) - len(todo) + start + len(batch), len(prompts))
    records = [log[p.id] for p in prompts]
    by_category = defaultdict(list)
    for r in records:
        by_category[r["category"] or "all"].append(r)
    metrics = {"judge": judge.name, "decode": decode.mode, "n": len(records), **_rates(records),
               "by_category": {c: _rates(rs) for c, rs in sorted(by_category.items())}}
    by_label = {label: [r for r in records if r.get("label") == label] for label in LABELS}
    if any(by_label.values()):
        metrics["by_label"] = {label: _rates(rs) for label, rs in by_label.items() if rs}
        if by_label["safe"]:
            metrics["over_refusal_rate"] = metrics["by_label"]["safe"]["refusal_rate"]
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
    checked = [r["answered"] for r in records if r.get("answered") is not None]
    if checked:
        rates["utility"] = Rate(sum(checked), len(checked)).to_dict()
    return rates
