"""``safepretrain intervene``: run a recipe of data interventions over a corpus, locally or on a cluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from safepretrain.errors import UserError

console = Console()


def build_scorer(name: str, world: Path | None, llm: dict | None = None):
    if name == "oracle":
        if world is None:
            raise UserError("--scorer oracle needs --world DIR (the MedSafetyWorld whose oracle labels the text)")
        from safepretrain.pipeline.scorers.oracle import OracleScorer

        return OracleScorer(world)
    if name == "lexicon":
        from safepretrain.pipeline.scorers.lexicon import LexiconScorer

        return LexiconScorer()
    if name.startswith("embedding:"):
        from safepretrain.pipeline.scorers.embedding import EmbeddingScorer

        return EmbeddingScorer(Path(name.removeprefix("embedding:")))
    if name.startswith("source:"):
        from safepretrain.pipeline.scorers.source import SourceScorer

        return SourceScorer(Path(name.removeprefix("source:")))
    if name.startswith("ensemble:"):
        from safepretrain.pipeline.scorers.ensemble import EnsembleScorer

        return EnsembleScorer([build_scorer(part, world, llm) for part in name.removeprefix("ensemble:").split(",")])
    if name == "llm":
        if not llm:
            raise UserError("--scorer llm needs --llm-url (an OpenAI-compatible endpoint) and --llm-model")
        from safepretrain.pipeline.scorers.llm import LLMScorer

        return LLMScorer(llm["url"], llm["model"], cache=llm.get("cache"))
    raise UserError(f"unknown scorer {name!r}; choose oracle, lexicon, llm, embedding:HEAD_DIR, source:LABELED.jsonl "
                    "or ensemble:A,B")


def intervene(
    corpus: Path = typer.Argument(..., help="A JSONL/Parquet file or a folder of shards ({'text': ...} records)."),
    out: Path = typer.Option(..., "--out", help="Output folder: one shard per task, plus _pipeline/ (logs, stats)."),
    recipe: str = typer.Option("raw", help="raw, filter, rephrase, refusal, moral, safety-pretraining, tags, reflect, "
                                            "or a pipeline file (steps.yaml, see docs/pipeline.md)."),
    scorer: str = typer.Option("oracle", help="oracle (MedSafetyWorld ground truth), lexicon, embedding:HEAD_DIR "
                                               "(safepretrain scorer train), source:LABELED.jsonl (labels of the "
                                               "documents that contain a text), or ensemble:A,B (max of scorers)."),
    world: Path | None = typer.Option(None, "--world", help="MedSafetyWorld folder (oracle scorer, exact rewriter)."),
    llm_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) for "
                                                  "the llm scorer and for rewriting real corpora."),
    llm_model: str | None = typer.Option(None, help="Model name to send to --llm-url."),
    threshold: int = typer.Option(1, help="Scores at or above this are unsafe."),
    rephrase_max: int = typer.Option(3, help="Rephrase scores threshold..this (use 5 for MedSafetyWorld)."),
    refusal_min: int = typer.Option(4, help="Scores at or above this become refusal / moral-education data."),
    tag_p: float = typer.Option(0.05, help="Harmfulness tag probability per word (tags recipe)."),
    reflection_format: str = typer.Option("special", help="Reflection format: special (toolkit tokens) or plain."),
    segment_words: int = typer.Option(100, help="Maximum words per SRP segment (tokens with --segment-tokenizer)."),
    segment_tokenizer: Path | None = typer.Option(None, help="Count SRP segment lengths in this tokenizer's tokens."),
    reflection_dropout: float = typer.Option(0.0, help="Share of SRP reflections left out (the text stays)."),
    seed: int = typer.Option(0, help="Seed for tags and role names (per document, so sharding does not matter)."),
    executor: str = typer.Option("local", help="local, ray or slurm (datatrove executors)."),
    tasks: int = typer.Option(1, help="Output shards; each task resumes independently."),
    workers: int = typer.Option(1, help="Tasks run at once."),
    on_error: str = typer.Option("raise", help="Bad input records: raise (stop, naming file and line) or skip."),
    compression: str | None = typer.Option(None, help="Output compression: gzip or zstd (default none)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous job in --out."),
) -> None:
    """Score a corpus and apply a recipe of the seed papers' interventions; re-run to resume."""
    from safepretrain.pipeline.documents import reader, writer
    from safepretrain.pipeline.recipes import RecipeConfig, build_steps
    from safepretrain.pipeline.run import ExecutionConfig, run_pipeline, step_table

    if on_error not in ("raise", "skip"):
        raise UserError("--on-error must be raise or skip")
    if compression not in (None, "gzip", "zstd"):
        raise UserError("--compression must be gzip or zstd")
    if reflection_format not in ("special", "plain"):
        raise UserError("--reflection-format must be special or plain")
    if not 0 <= reflection_dropout < 1:
        raise UserError("--reflection-dropout must be in [0, 1)")
    config = RecipeConfig(threshold=threshold, rephrase_max=rephrase_max, refusal_min=refusal_min, tag_p=tag_p,
                          reflection_format=reflection_format, reflect_max_len=segment_words,
                          reflect_dropout=reflection_dropout,
                          segment_tokenizer=str(segment_tokenizer) if segment_tokenizer else None, seed=seed)
    if (llm_url is None) != (llm_model is None):
        raise UserError("--llm-url and --llm-model go together")
    llm = {"url": llm_url, "model": llm_model, "cache": str(out.parent / f".{out.name}.llm-cache.sqlite")} \
        if llm_url else None
    score = build_scorer(scorer, world, llm)
    backend = None
    if world is not None:
        from safepretrain.pipeline.world_backend import WorldBackend

        backend = WorldBackend(world)
    elif llm is not None:
        from safepretrain.pipeline.llm_backend import LLMBackend
        from safepretrain.pipeline.llm_client import ChatClient

        backend = LLMBackend(ChatClient(llm_url, llm_model))
    steps = build_steps(recipe, score, backend, config)
    recipe_text = Path(recipe).read_text() if recipe.endswith((".yaml", ".yml")) else None
    job = {"corpus": str(corpus), "recipe": recipe, "recipe_file": recipe_text, "scorer": scorer, "world": str(world) if world else None,
           "llm": [llm_url, llm_model],
           "config": config.__dict__, "tasks": tasks, "on_error": on_error, "compression": compression}
    pipeline = [reader(corpus, on_error=on_error), *steps, writer(out, compression=compression)]
    with console.status(f"{recipe}: {tasks} task(s) on {workers} {executor} worker(s)"):
        stats = run_pipeline(pipeline, out, job, ExecutionConfig(executor=executor, tasks=tasks, workers=workers))
    table = Table(title=f"{recipe} -> {out}")
    table.add_column("step")
    table.add_column("stats")
    for name, totals in step_table(stats):
        table.add_row(name, ", ".join(f"{k} {v:,.0f}" if isinstance(v, (int, float)) else f"{k} {v}"
                                      for k, v in totals.items() if k != "total"))
    console.print(table)



scorer_app = typer.Typer(no_args_is_help=True, help="Train and check learned safety scorers.")


@scorer_app.command("train")
def scorer_train(
    labeled: Path | None = typer.Argument(None, help="JSONL of {'text', 'score' (0-5)} records."),
    out: Path = typer.Option(..., "--out", help="Folder for the trained head (head.npz, scorer.json, metrics.json)."),
    from_world: Path | None = typer.Option(None, "--from-world", help="Use a MedSafetyWorld's labeled sentences "
                                                                        "instead (corpus to train, eval/reflection "
                                                                        "to test held-out types)."),
    unsafe_weight: float = typer.Option(10.0, "--lambda", help="Weight of unsafe classes (1-5) vs safe (0)."),
    holdout: float = typer.Option(0.2, help="Share of the labeled data kept out of training for the metrics."),
    max_examples: int = typer.Option(20_000, help="Use at most this many labeled texts (seeded sample)."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Train the embedding scorer's linear head (MiniLM embeddings) and report held-out accuracy and unsafe recall."""
    import numpy as np

    from safepretrain.io import check_output_dir
    from safepretrain.pipeline.scorers.embedding import SentenceEncoder, evaluate, save_head, train_head

    check_output_dir(out, overwrite)
    if (labeled is None) == (from_world is None):
        raise UserError("give either a LABELED.jsonl file or --from-world DIR")
    texts, scores, extra = _world_labels(from_world) if from_world else (*_labeled_jsonl(labeled), {})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))[:max_examples]
    cut = int(len(order) * (1 - holdout))
    encoder = SentenceEncoder()
    with console.status(f"embedding {len(order):,} texts"):
        embeddings = encoder.encode([texts[i] for i in order])
    scores = np.asarray(scores)[order]
    head = train_head(embeddings[:cut], scores[:cut], unsafe_weight, seed)
    metrics = {"train": evaluate(head, embeddings[:cut], scores[:cut]),
               "heldout": evaluate(head, embeddings[cut:], scores[cut:])}
    for name, (split_texts, split_scores) in extra.items():
        metrics[name] = evaluate(head, encoder.encode(split_texts), np.asarray(split_scores))
    config = {"version": f"1-{seed}", "max_tokens": encoder.max_tokens, "lambda": unsafe_weight, "holdout": holdout,
              "source": str(labeled or from_world), "examples": int(len(order)), "seed": seed}
    save_head(head, out, metrics, config, overwrite)
    table = Table(title=f"embedding scorer -> {out}")
    for column in ("split", "n", "accuracy", "unsafe recall", "unsafe precision"):
        table.add_column(column, justify="right")
    for name, m in metrics.items():
        table.add_row(name, f"{m['n']:,}", f"{m['accuracy']:.3f}", f"{m['unsafe_recall']:.3f}",
                      f"{m['unsafe_precision']:.3f}")
    console.print(table)


def _labeled_jsonl(path: Path) -> tuple[list[str], list[int]]:
    from safepretrain.io import read_jsonl_numbered

    texts, scores = [], []
    for number, record in read_jsonl_numbered(path):
        score = record.get("score") if isinstance(record, dict) else None
        if not isinstance(record.get("text"), str) or not isinstance(score, int) or not 0 <= score <= 5:
            raise UserError(f"{path}, line {number}: expected {{'text': str, 'score': int 0-5}}")
        texts.append(record["text"])
        scores.append(score)
    return texts, scores


def _world_labels(world: Path):
    """Unique labeled sentences of the corpus (5 = unsafe, 0 = safe); the reflection split's sentences, by whether
    their type is held out, test generalization to types the corpus never shows."""
    from safepretrain.world.generate import WorldFolder

    folder = WorldFolder(world)
    seen: dict[str, int] = {}
    for doc in folder.corpus():
        for seg in doc.segments:
            seen.setdefault(seg.text, 5 if seg.label == "unsafe" else 0)
    heldout_types = set(folder.config.heldout_types)
    splits: dict[str, tuple[list[str], list[int]]] = {"reflection_seen": ([], []), "reflection_heldout_types": ([], [])}
    for doc in folder.reflection_documents():
        for seg in doc.segments:
            name = "reflection_heldout_types" if set(seg.types) & heldout_types else "reflection_seen"
            splits[name][0].append(seg.text)
            splits[name][1].append(5 if seg.label == "unsafe" else 0)
    return list(seen), list(seen.values()), splits


def report_card(
    components: list[Path] = typer.Argument(..., help="Corpus components: files or folders (e.g. pipeline outputs)."),
    out: Path = typer.Option(..., "--out", help="Folder for report.json, the PNG charts and index.html."),
    scorer: str | None = typer.Option(None, help="Score samples that carry no stored score (see intervene)."),
    world: Path | None = typer.Option(None, "--world", help="MedSafetyWorld folder, for --scorer oracle."),
    sample: int = typer.Option(1000, help="Documents sampled per component for the score distribution."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """The Data Safety Report Card: score distribution, hazard-category hits per 1M words, intervention stats."""
    from safepretrain.io import check_output_dir
    from safepretrain.pipeline.report_card import component_card, write_report_card

    check_output_dir(out, overwrite)
    score = build_scorer(scorer, world) if scorer else None
    cards = []
    for path in components:
        with console.status(f"reading {path}"):
            cards.append(component_card(path, score, sample, seed))
    write_report_card(cards, out)
    table = Table(title=f"Data Safety Report Card -> {out}/index.html")
    for column in ("component", "documents", "words", "unsafe share (sample)", "top hazard (per 1M words)"):
        table.add_column(column)
    for c in cards:
        total = sum(c.scores.values())
        unsafe = f"{sum(n for s, n in c.scores.items() if s >= 1) / total:.1%}" if total else "not scored"
        top = max(c.hazard_per_million_words.items(), key=lambda kv: kv[1])
        table.add_row(c.name, f"{c.documents:,}", f"{c.words:,}", unsafe,
                      f"{top[0]} {top[1]:.1f}" if top[1] else "none")
    console.print(table)


def srp_sft(
    chats: Path = typer.Argument(..., help="Chat JSONL ({'messages': [...]}, optionally with segment labels)."),
    out: Path = typer.Option(..., "--out", help="The SRP-format chat JSONL to write."),
    reflection_format: str = typer.Option("special", help="special (toolkit tokens) or plain (<think> ... </think>)."),
    stop_noise: bool = typer.Option(False, help="After an Unsafe stop: 100-200 noise units and end-of-text again."),
    cut_prob: float = typer.Option(0.0, help="Probability of cutting a response mid-segment into 300-1000 noise units."),
    scorer: str | None = typer.Option(None, help="Segment scorer for records without labels (see intervene)."),
    world: Path | None = typer.Option(None, "--world", help="MedSafetyWorld folder, for --scorer oracle."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Rewrite chat data in SRP's post-training format (prompt reflection, segment reflections, stop after Unsafe)."""
    from safepretrain.io import read_jsonl_numbered, write_jsonl
    from safepretrain.markup import reflection_format as format_named
    from safepretrain.pipeline.srp_sft import SrpSftConfig, srp_chat

    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; choose another --out or pass --overwrite")
    if not 0 <= cut_prob <= 1:
        raise UserError("--cut-prob must be in [0, 1]")
    try:
        fmt = format_named(reflection_format)
    except KeyError as e:
        raise UserError(e.args[0]) from None
    config = SrpSftConfig(stop_noise=stop_noise, cut_prob=cut_prob, seed=seed)
    score = build_scorer(scorer, world) if scorer else None

    def converted():
        for number, record in read_jsonl_numbered(chats):
            if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
                raise UserError(f"{chats}, line {number}: expected a 'messages' list")
            try:
                yield srp_chat(record, fmt, config, score)
            except (ValueError, KeyError, StopIteration) as e:
                raise UserError(f"{chats}, line {number}: {e or type(e).__name__}; records without labels need "
                                "--scorer") from None

    count = write_jsonl(out, converted())
    console.print(f"{count:,} chats in SRP format ({reflection_format} reflections) -> {out}")
