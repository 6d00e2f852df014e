"""``safepretrain generate``: decode prompts with a trained model (plain, SRP-guarded, beam or Safe Beam)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from safepretrain.errors import UserError

console = Console()


def generate(
    model: Path = typer.Argument(..., help="A saved model folder (e.g. runs/sft/model)."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="A prompt (repeatable)."),
    file: Path | None = typer.Option(None, "--file", "-f", help="JSONL of {'prompt': ...} (and optional 'prefill')."),
    chat: bool = typer.Option(False, "--chat", help="Wrap each prompt as a user turn with the tokenizer's chat template."),
    mode: str = typer.Option("plain", "--mode", help="plain, guarded (stop on the model's own non-Safe reflection), "
                                                     "beam, or safebeam (steer away from the harmful tag)."),
    policy: str = typer.Option("stop", "--policy", help="guarded: stop (return text up to the reflection) or refuse."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    top_k: int = typer.Option(0, "--top-k"),
    beams: int = typer.Option(4, "--beams", help="k of beam / Safe Beam search."),
    candidates: int = typer.Option(4, "--candidates", help="N of Safe Beam: next tokens scored per beam."),
    prefill: str | None = typer.Option(None, "--prefill", help="Attack: force the start of every answer."),
    suppress: list[str] = typer.Option([], "--suppress", help="Attack: forbid 'reflection' and/or 'tag' tokens."),
    reflect_every: int = typer.Option(0, "--reflect-every", help="Ask for a reflection at the first sentence end "
                                                                 "after N tokens since the last one (0 = never)."),
    reflect_on_request: bool = typer.Option(False, "--reflect-on-request", help="Ask for the verdict on the request "
                                            "before each answer (SRP's opening reflection; not under --prefill)."),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write one JSON line per prompt here (else print)."),
    device: str = typer.Option("auto", "--device", help="Where the model runs: auto (the GPU when there is one), "
                                                       "cpu, cuda, cuda:1."),
) -> None:
    """Generate answers; guarded decoding never lets text written after a non-Safe reflection through."""
    from safepretrain.decode.config import DecodeConfig
    from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
    from safepretrain.io import write_jsonl

    prompts, prefills = _read_prompts(prompt, file, prefill)
    try:
        config = DecodeConfig(mode=mode, policy=policy, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_k=top_k, beams=beams, candidates=candidates, suppress=tuple(suppress), seed=seed,
                              reflect_every=reflect_every, reflect_on_request=reflect_on_request)
    except ValueError as e:
        raise UserError(str(e)) from None
    lm, tokenizer = load_model(model, device)
    if chat:
        prompts = [chat_prompt(tokenizer, p) for p in prompts]
    with console.status(f"decoding {len(prompts)} prompt(s), mode {mode}"):
        generations = Decoder(lm, tokenizer, config).generate(prompts, prefills)
    records = [{"prompt": p, "prefill": f, **g.to_dict()} for p, f, g in zip(prompts, prefills, generations)]
    if out:
        write_jsonl(out, records)
        console.print(f"{len(records)} generations -> {out}")
        return
    for r in records:
        console.rule(f"[dim]{r['finish_reason']}[/] ({r['new_tokens']} tokens)")
        console.print(r["prefill"] + r["text"], markup=False, highlight=False)


def _read_prompts(prompt: list[str], file: Path | None, prefill: str | None) -> tuple[list[str], list[str]]:
    from safepretrain.io import read_jsonl_numbered

    prompts, prefills = list(prompt), [prefill or ""] * len(prompt)
    if file:
        for line, record in read_jsonl_numbered(file):
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise UserError(f"{file}, line {line}: expected an object with a 'prompt' string")
            prompts.append(record["prompt"])
            prefills.append(record.get("prefill") or prefill or "")
    if not prompts:
        raise UserError("no prompts: pass --prompt TEXT or --file prompts.jsonl")
    return prompts, prefills
