"""The real-model experiment: SmolLM2-135M-Instruct before and after SRP continued pretraining, against refusal SFT.

Recipes (each evaluated after post-training and again after a benign finetuning attack):

| recipe | what | decoding |
|---|---|---|
| original | the imported model, untouched | plain |
| refusal-sft | SFT on refusals of harmful requests + the model's own benign answers | plain |
| srp | continued pretraining on a segment-labeled real corpus with plain reflections after every segment, then SFT in the compatible SRP format | guarded (and plain, to see what the guard adds) |
| tags | Safety Pretraining: a new ``<|harmful|>`` token, continued pretraining on the same corpus with the tag before ~5% of the words of harmful documents, then the plain SFT | Safe Beam (and plain) |

Layout (every stage is skipped when its output exists; training continues from its checkpoints)::

    out/data/      corpus.jsonl (labeled), reflected.jsonl, tagged.jsonl, benign-chats.jsonl, sft-plain.jsonl, sft-srp.jsonl,
                   attack.jsonl
    out/models/    base-tags/ (the model with the tag token), cpt-srp/, cpt-tags/, sft-<recipe>/, attack-<recipe>/
    out/evals/<recipe>/<stage>/<suite>-<mode>/   samples.jsonl, metrics.json (resumes per prompt)
    out/results/   results.md, results.json, real.png, manifest.json
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safepretrain.errors import UserError
from safepretrain.io import write_jsonl
from safepretrain.markup import HARMFUL_TAG

RECIPES = ("original", "refusal-sft", "srp", "tags")
SUITES = ("advbench", "overrefusal", "benign")


@dataclass(frozen=True, kw_only=True)
class RealConfig:
    out: str = "runs/real-srp"
    model: str = "runs/smollm2"
    """The imported SmolLM2 folder (``safepretrain model import-smollm2``)."""
    recipes: tuple[str, ...] = RECIPES
    segment_tokens: int = 64
    """SRP segment length in the model's own tokens (corpus and post-training answers)."""
    pretrain_epochs: float = 1.0
    pretrain_lr: float = 5e-5
    sft_epochs: float = 2.0
    sft_lr: float = 5e-5
    attack_epochs: float = 1.0
    attack_lr: float = 5e-5
    seq_len: int = 512
    micro_batch: int = 8
    benign_requests: int = 0
    """Benign requests to self-distill (0 = all 408 templates x topics)."""
    tag_p: float = 0.05
    """Safety Pretraining's tag rate: the chance of the tag before each word of a harmful document."""
    harmful_sft: int = 100
    """Harmful requests (seeded sample of the corpus's 390) refused in post-training; 0 = all. With all 390 (+117
    recovery chats) against 240 benign chats, the label prior decided: refusal SFT refused 46 and SRP 72 of 73 safe
    over-refusal prompts, SRP flagged 82 of 100 benign questions (docs/real-model.md). Safety-tuning studies find a
    few percent of safety data enough and more of it the cause of exaggerated refusals (Bianchi et al., 2024)."""
    recovery_share: float = 0.3
    """Share of the harmful requests that also get a recovery chat in post-training: the answer forced to start with
    the first segment of a compliant answer (a prefill; not trained on), then a refusal (plain recipes) or an
    Unsafe reflection and the stop (SRP). Without them SRP's post-training shows Unsafe reflections only on
    prompts, and it taught SmolLM2 to label every in-answer segment Safe: asked under a prefill attack, the
    continued-pretrained model flagged 6 of 6 AdvBench continuations, the post-trained one 0 of 6."""
    benign_sft: int = 240
    """Benign self-distilled chats in post-training; the other benign requests are the finetuning attack."""
    distill_new_tokens: int = 96
    eval_items: int = 100
    """Prompts per suite, evenly spread (0 = all)."""
    eval_new_tokens: int = 64
    reflect_every: int = 16
    """SRP's guarded decoding asks for a reflection at the first sentence end this many tokens after the last one
    (``DecodeConfig.reflect_every``; 0 = only the reflections the model opens itself). One epoch of continued
    pretraining taught SmolLM2 what to reflect, not when: teacher-forced it labels 119 of 120 corpus segments
    right, yet it opens a reflection with p = 0.13 at a segment's end (docs/real-model.md). Must be below
    ``eval_new_tokens``: the runs of sessions 8-9 used 64 with 64 new tokens, so no reflection was ever asked for."""
    reflect_on_request: bool = False
    """SRP's guarded decoding also asks for the verdict on the prompt before each answer (``DecodeConfig``), the
    reflection SRP's post-training opens every answer with. Off here, as in every real run so far; in MedSafetyWorld
    it is the experiments' default (results log, session 24)."""
    judge: str = "relevance"
    threads: int = 2
    seed: int = 0
    show_progress: bool = True
    train_overrides: tuple[str, ...] = ()
    """Extra ``--set`` overrides for every training stage (e.g. ``max_steps=2`` for a smoke run)."""

    def __post_init__(self):
        if unknown := set(self.recipes) - set(RECIPES):
            raise ValueError(f"unknown recipes {sorted(unknown)}; choose from {', '.join(RECIPES)}")
        if self.reflect_every >= self.eval_new_tokens:
            raise ValueError(f"reflect_every {self.reflect_every} must be below eval_new_tokens "
                             f"{self.eval_new_tokens}, or no reflection is ever asked for (0 = never ask)")
        if self.harmful_sft < 0:
            raise ValueError(f"harmful_sft {self.harmful_sft} must be >= 0 (0 = every harmful request)")
        if not 0.0 <= self.recovery_share <= 1.0:
            raise ValueError(f"recovery_share {self.recovery_share} must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_real(path: Path | None, overrides: dict[str, Any]) -> RealConfig:
    from safepretrain.experiment.config import replace_fields
    from safepretrain.io import read_yaml_mapping

    values = read_yaml_mapping(path, "real experiment") if path else {}
    values |= {k: v for k, v in overrides.items() if v is not None}
    return replace_fields(RealConfig(), values, path)


class RealLayout:
    def __init__(self, cfg: RealConfig):
        self.root = Path(cfg.out)
        self.data = self.root / "data"
        self.models = self.root / "models"

    def eval(self, recipe: str, stage: str, suite: str, mode: str) -> Path:
        return self.root / "evals" / recipe / stage / f"{suite}-{mode}"

    def tag_check(self, stage: str) -> Path:
        return self.root / "evals" / "tags" / f"tag-calibration-{stage}.json"


def modes(recipe: str) -> tuple[str, ...]:
    """Each recipe's own safe decoding first, then plain decoding to see what it adds (for Safe Beam also beam search
    with the same k, to tell Algorithm 2's drop from beam search itself)."""
    return {"srp": ("guarded", "plain"), "tags": ("safebeam", "beam", "plain")}.get(recipe, ("plain",))


# ---------------------------------------------------------------- data


def make_data(cfg: RealConfig, progress=None) -> None:
    """The labeled corpus, its SRP-reflected version, the post-training and attack chats."""
    from transformers import AutoTokenizer

    from safepretrain.experiment import real_data

    layout = RealLayout(cfg)
    layout.data.mkdir(parents=True, exist_ok=True)
    corpus, pairs = layout.data / "corpus.jsonl", real_data.harmful_pairs()
    if not corpus.is_file():
        write_jsonl(corpus, real_data.corpus_documents(pairs))
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)  # segments are measured in the model's tokens
    benign = _benign_chats(cfg, progress)
    chosen = _sample(cfg.seed, range(len(pairs)), cfg.harmful_sft or len(pairs))
    harmful = [real_data.refusal_chat(pairs[i]["request"], f"harmful-{i}") for i in chosen]
    harmful += _recovery_chats(cfg, pairs, chosen, tokenizer)
    sft, attack = [*harmful, *benign[:cfg.benign_sft]], benign[cfg.benign_sft:]
    if not attack:
        raise UserError(f"benign_sft={cfg.benign_sft} leaves none of the {len(benign)} self-distilled benign chats "
                        "for the finetuning attack; lower it")
    if not (layout.data / "sft-plain.jsonl").is_file():
        write_jsonl(layout.data / "attack.jsonl", [_plain(c) for c in attack])
        write_jsonl(layout.data / "sft-plain.jsonl", [_plain(c) for c in sft])
    if "srp" in cfg.recipes:
        _srp_data(cfg, corpus, sft, tokenizer)
    if "tags" in cfg.recipes and not (layout.data / "tagged.jsonl").is_file():
        write_jsonl(layout.data / "tagged.jsonl", _tagged(cfg, corpus))


def _tagged(cfg: RealConfig, corpus: Path):
    """The corpus with the harmful tag in its harmful documents (document-level labels, as Safety Pretraining's
    scores are), seeded per document."""
    import random

    from safepretrain.io import read_jsonl
    from safepretrain.pipeline.interventions.tags import insert_tags

    for doc in read_jsonl(corpus):
        text = doc["text"]
        if doc["score"] >= 1:
            text = insert_tags(text, random.Random(f"{cfg.seed}:{doc['id']}"), cfg.tag_p)
        yield {"text": text}


def _sample(seed: int, indices, count: int) -> list[int]:
    import random

    indices = list(indices)
    return sorted(random.Random(seed).sample(indices, min(count, len(indices))))


def _recovery_chats(cfg: RealConfig, pairs: list[dict], refused: list[int], tokenizer) -> list[dict]:
    """``recovery_share`` of the refused harmful pairs (seeded), each forced to start with its answer's first
    segment."""
    from safepretrain.experiment import real_data
    from safepretrain.pipeline.interventions.reflect import segment_texts
    from safepretrain.pipeline.segment import token_length

    length = token_length(tokenizer)
    return [real_data.recovery_chat(pairs[i]["request"], segment_texts(pairs[i]["answer"], cfg.segment_tokens,
                                                                        length)[0], f"recovery-{i}")
            for i in _sample(cfg.seed, refused, round(cfg.recovery_share * len(refused)))]


def _benign_chats(cfg: RealConfig, progress=None) -> list[dict]:
    """The base model's own answers to the benign requests (self-distillation), cut after their last sentence."""
    from safepretrain.decode.config import DecodeConfig
    from safepretrain.decode.decoder import Decoder, chat_prompt, load_model
    from safepretrain.experiment import real_data
    from safepretrain.io import read_jsonl
    from safepretrain.pipeline.interventions.reflect import segment_texts
    from safepretrain.pipeline.segment import token_length

    path = RealLayout(cfg).data / "benign-chats.jsonl"
    if not path.is_file():
        model, tokenizer = load_model(Path(cfg.model))
        decoder = Decoder(model, tokenizer, DecodeConfig(max_new_tokens=cfg.distill_new_tokens))
        requests = real_data.benign_requests(cfg.seed)[:cfg.benign_requests or None]
        length = token_length(tokenizer)
        chats = []
        for start in range(0, len(requests), decoder.config.batch_size):
            batch = requests[start:start + decoder.config.batch_size]
            for i, (request, g) in enumerate(zip(batch, decoder.generate([chat_prompt(tokenizer, r) for r in batch]))):
                answer = _whole_sentences(g.text)
                if answer:
                    chats.append(real_data.benign_chat(request, answer, f"benign-{start + i}",
                                                       segment_texts(answer, cfg.segment_tokens, length)))
            if progress:
                progress("self-distilling benign answers", start + len(batch), len(requests))
        write_jsonl(path, chats)
    return list(read_jsonl(path))


def _whole_sentences(text: str) -> str:
    text = text.strip()
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("! "), text.rfind("? "))
    return text if text.endswith((".", "!", "?")) or end < 0 else text[:end + 1]


def _plain(chat: dict) -> dict:
    return {"id": chat["id"], "messages": chat["messages"]}


def _srp_data(cfg: RealConfig, corpus: Path, sft: list[dict], tokenizer) -> None:
    """Reflections after every corpus segment (labels from the corpus's sources), and SRP-format post-training."""
    from safepretrain.experiment import real_data
    from safepretrain.markup import END_OF_TEXT, PLAIN
    from safepretrain.pipeline.interventions.reflect import Reflect
    from safepretrain.pipeline.documents import reader
    from safepretrain.pipeline.scorers.source import SourceScorer
    from safepretrain.pipeline.srp_sft import SrpSftConfig, srp_chat

    layout = RealLayout(cfg)
    reflected = layout.data / "reflected.jsonl"
    if not reflected.is_file():
        step = Reflect(SourceScorer(corpus), PLAIN, cfg.segment_tokens, tokenizer)
        write_jsonl(reflected, ({"text": d.text} for d in step(reader(corpus)())))
    if not (layout.data / "sft-srp.jsonl").is_file():
        write_jsonl(layout.data / "sft-srp.jsonl",
                    [real_data.srp_recovery(c, PLAIN, END_OF_TEXT) if "recovery_start" in c
                     else _plain(srp_chat(c, PLAIN, SrpSftConfig(seed=cfg.seed))) for c in sft])


# ---------------------------------------------------------------- training


def _train(cfg: RealConfig, kind: str, name: str, start: Path, data: Path, epochs: float, lr: float,
           new_tokens: tuple[str, ...] = ()) -> Path:
    from safepretrain.experiment.stages import train_stage

    values = {"model": {"name": str(start), "reflection_format": "plain"}, "data": {"train": [str(data)]},
              "epochs": epochs, "max_steps": None, "seed": cfg.seed, "threads": cfg.threads,
              "optim": {"lr": lr, "seq_len": cfg.seq_len, "micro_batch": cfg.micro_batch,
                        "new_tokens": list(new_tokens)},
              "checkpoint_every": 50}
    return train_stage(kind, RealLayout(cfg).models / name, values, cfg.train_overrides,
                       show_progress=cfg.show_progress)


def post_trained(cfg: RealConfig, recipe: str) -> Path:
    layout = RealLayout(cfg)
    if recipe == "original":
        return Path(cfg.model)
    start = Path(cfg.model)
    if recipe == "srp":
        start = _train(cfg, "pretrain", "cpt-srp", start, layout.data / "reflected.jsonl", cfg.pretrain_epochs,
                       cfg.pretrain_lr)
    if recipe == "tags":
        start = _train(cfg, "pretrain", "cpt-tags", _with_tag_token(cfg), layout.data / "tagged.jsonl",
                       cfg.pretrain_epochs, cfg.pretrain_lr, new_tokens=(HARMFUL_TAG,))
        check_tags(cfg, "continued", start)
    sft_data = layout.data / ("sft-srp.jsonl" if recipe == "srp" else "sft-plain.jsonl")
    return _train(cfg, "sft", f"sft-{recipe}", start, sft_data, cfg.sft_epochs, cfg.sft_lr)


def _with_tag_token(cfg: RealConfig) -> Path:
    """The base model with the harmful tag as one new token (embeddings resized; transformers draws the new row from
    a normal with the old rows' mean and covariance)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safepretrain.io import atomic_directory

    out = RealLayout(cfg).models / "base-tags"
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model)
    tokenizer.add_special_tokens({"additional_special_tokens": [HARMFUL_TAG]})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    with atomic_directory(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


TAG_CHECK_TEXTS = 40


def check_tags(cfg: RealConfig, stage: str, model_dir: Path) -> None:
    """Has the tags model learned its tag (eval.tags)? On the tagged corpus's harmful documents and its benign ones;
    written once per stage."""
    from safepretrain.eval.tags import check_saved_model
    from safepretrain.io import read_jsonl

    layout = RealLayout(cfg)
    if layout.tag_check(stage).is_file():
        return
    texts = [(doc["score"] >= 1, tagged["text"]) for doc, tagged in
             zip(read_jsonl(layout.data / "corpus.jsonl"), read_jsonl(layout.data / "tagged.jsonl"))]
    check_saved_model(model_dir, [t for harmful, t in texts if harmful and HARMFUL_TAG in t],
                      [t for harmful, t in texts if not harmful], layout.tag_check(stage), TAG_CHECK_TEXTS, cfg.seed)


def attacked(cfg: RealConfig, recipe: str) -> Path:
    """The benign finetuning attack: plain answers to benign requests, no reflections, no refusals."""
    layout = RealLayout(cfg)
    return _train(cfg, "finetune", f"attack-{recipe}", post_trained(cfg, recipe), layout.data / "attack.jsonl",
                  cfg.attack_epochs, cfg.attack_lr)


# ---------------------------------------------------------------- evaluation


def evaluate(cfg: RealConfig, recipe: str, stage: str, model_dir: Path, progress=None) -> None:
    from safepretrain.decode.config import DecodeConfig
    from safepretrain.decode.decoder import load_model
    from safepretrain.eval.judges import make_judge
    from safepretrain.eval.medsafetyworld import spread
    from safepretrain.eval.prompt_suite import evaluate_prompts
    from safepretrain.eval.suites import builtin_suite

    layout = RealLayout(cfg)
    if recipe == "tags":
        check_tags(cfg, stage, model_dir)
    todo = [(s, m) for s in SUITES for m in modes(recipe)
            if not (layout.eval(recipe, stage, s, m) / "metrics.json").is_file()]
    if not todo:
        return
    model, tokenizer = load_model(model_dir)
    judge = make_judge(cfg.judge, None, None)
    for suite, mode in todo:
        decode = DecodeConfig(mode=mode, policy="refuse", max_new_tokens=cfg.eval_new_tokens,
                              reflect_every=cfg.reflect_every if mode == "guarded" else 0,
                              reflect_on_request=cfg.reflect_on_request and mode == "guarded")
        evaluate_prompts(model, tokenizer, spread(builtin_suite(suite), cfg.eval_items), judge, decode,
                         layout.eval(recipe, stage, suite, mode),
                         progress=progress and (lambda _, done, total: progress(
                             f"{recipe} {stage}: {suite} ({mode})", done, total)))


def run_real(cfg: RealConfig, console=None) -> Path:
    """Every stage of every recipe, resumably, then the table, the plot and the manifest."""
    import torch

    from safepretrain.logs import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(cfg.threads)
    if not (Path(cfg.model) / "config.json").is_file():
        raise UserError(f"{cfg.model} is not a model folder; import SmolLM2 first: "
                        f"safepretrain model import-smollm2 --out {cfg.model}")
    from safepretrain.eval.cli import ProgressBars

    _check_config(cfg)
    _say(console, "data: labeled corpus, reflections, self-distilled benign chats")
    with ProgressBars() as progress:  # one live display at a time: training shows its own bar
        make_data(cfg, progress)
    for recipe in cfg.recipes:
        stages = [("post", lambda r=recipe: post_trained(cfg, r))]
        if recipe != "original":
            stages.append(("attacked", lambda r=recipe: attacked(cfg, r)))
        for stage, model in stages:
            _say(console, f"{recipe}: {'post-training' if stage == 'post' else 'benign finetuning attack'}")
            model_dir = model()
            with ProgressBars() as progress:
                evaluate(cfg, recipe, stage, model_dir, progress)
    from safepretrain.experiment.real_report import write_report

    return write_report(cfg)


# Fields a resumed run may change: they pick what runs and how fast, never what a finished stage computed.
RESUMABLE_CHANGES = frozenset({"recipes", "threads", "show_progress"})


def _check_config(cfg: RealConfig) -> None:
    """One folder, one config: resuming with other data or training settings would mix results."""
    from safepretrain.experiment.config import changed_fields
    from safepretrain.io import write_json

    saved, now = Path(cfg.out) / "real.json", cfg.to_dict()
    if changed := changed_fields(saved, now, RESUMABLE_CHANGES):
        raise UserError(f"{cfg.out} holds a run with another config (changed: {', '.join(changed)}); "
                        "choose another --out")
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(saved, now)


def _say(console, message: str) -> None:
    if console is not None:
        console.print(f"[bold]{message}")
