"""The training loop shared by pretraining, SFT and finetuning attacks.

One process or many (``torchrun`` / ``accelerate launch``: DDP, or FSDP from an accelerate config) run the same code.
Every rank draws the same global batch and takes its slice; the loss is summed over target tokens and divided by the
global batch's target count, so 1 process and N processes take the same step on the same global batch.

A run folder holds::

    config.yaml            the validated config (a resumed run must match it)
    checkpoints/step-N/    accelerate state (model, optimizer, RNG) + trainer.json (step, data cursors, token counts)
    metrics.jsonl          one record per logged step (step of total_steps, loss, lr, tokens, tokens/s, intervention dose)
    model/                 the final HF model + tokenizer (from_pretrained-ready)
    loss.png, manifest.json
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from safepretrain.errors import UserError
from safepretrain.io import atomic_open, check_output_dir, dumps, write_json
from safepretrain.markup import reflection_format
from safepretrain.train.config import TrainConfig, completed, to_dict
from safepretrain.train.data import IGNORE_INDEX, BlockSampler, Tokenization, TokenStream, collate, load_stream
from safepretrain.train.tokenizer import load_tokenizer

CHECKPOINTS = "checkpoints"
TOKEN_CACHE = "tokens"


class TrainingStopped(UserError):
    """Ctrl-C: the run stopped cleanly at a step boundary after writing a checkpoint."""

    exit_code = 130


@dataclass
class Progress:
    """What a checkpoint stores besides weights and optimizer: where the run is."""

    step: int = 0
    tokens: int = 0
    intervened_tokens: int = 0
    sampler: dict = field(default_factory=dict)


@dataclass
class RunResult:
    out: Path
    steps: int
    tokens: int
    intervened_tokens: int
    final_loss: float
    tokens_per_second: float
    model_dir: Path


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Warmup-stable-decay: linear warmup, constant, linear decay to min_lr_ratio x lr over the last steps."""
    o = cfg.optim
    warmup, decay = round(o.warmup * total), round(o.decay * total)
    if step < warmup:
        return o.lr * (step + 1) / warmup
    if decay and step >= total - decay:
        done = (step - (total - decay) + 1) / decay
        return o.lr * (1 - done * (1 - o.min_lr_ratio))
    return o.lr


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          on_step: Callable[[int, float], None] | None = None, show_progress: bool = True) -> RunResult:
    """Run (or continue, with ``resume``) the training ``cfg`` describes."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(cfg.out)
    _prepare_out(out, cfg, resume, overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Without a GPU, accelerate only sets up gloo for torchrun-style launches when told it is running on CPU.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.precision), cpu=multi_cpu,
                              step_scheduler_with_optimizer=False)
    set_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    model = build_model(cfg, tokenizer)
    with accelerator.main_process_first():
        streams = _load_streams(cfg, tokenizer, out / TOKEN_CACHE)
    global_batch = cfg.optim.micro_batch * cfg.optim.grad_accum * accelerator.num_processes
    total = total_steps(cfg, streams[0], global_batch)
    sampler = BlockSampler([s.n_blocks(cfg.optim.seq_len) for s in streams], cfg.seed,
                           intervened_from_step=round(cfg.curriculum.start * total) if len(streams) > 1 else None,
                           mix=cfg.curriculum.mix)

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=cfg.optim.betas, fused=False)
    model, optimizer = accelerator.prepare(model, optimizer)
    new_rows = NewTokenRows(accelerator.unwrap_model(model),
                            _token_ids(tokenizer, cfg.optim.new_tokens, "optim.new_tokens"), cfg.optim)
    if new_rows.ids.numel():
        accelerator.register_for_checkpointing(new_rows)
    state = Progress()
    if resume:
        state = _load_checkpoint(accelerator, out)
        sampler.load_state_dict(state.sampler)
    metrics = _MetricsLog(out / "metrics.jsonl", keep_upto=state.step, enabled=accelerator.is_main_process)

    stop = _StopRequest()
    log_loss, log_targets, last_loss = 0.0, 0, float("nan")
    clock, clock_tokens, tokens_per_second = time.perf_counter(), 0, 0.0
    seq_len = cfg.optim.seq_len
    with stop, _progress_bar(show_progress and accelerator.is_main_process, total, state.step) as bar:
        model.train()
        while state.step < total:
            lr = lr_at(state.step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            new_rows.set_lr(lr / cfg.optim.lr)
            picks = sampler.next_batch(state.step, global_batch)
            loss_sum, n_targets = _train_step(accelerator, model, optimizer, new_rows, streams, picks, cfg)
            state.step += 1
            state.tokens += global_batch * seq_len
            state.intervened_tokens += sum(seq_len for s, _ in picks if s == 1)
            clock_tokens += global_batch * seq_len
            log_loss, log_targets = log_loss + loss_sum, log_targets + n_targets
            last = state.step == total
            if state.step % cfg.log_every == 0 or last:
                last_loss = _global_mean(accelerator, log_loss, log_targets)
                tokens_per_second = clock_tokens / (time.perf_counter() - clock)
                metrics.write({"step": state.step, "total_steps": total, "loss": round(last_loss, 5), "lr": lr,
                               "tokens": state.tokens,
                               "tokens_per_s": round(tokens_per_second, 1),
                               "intervened_tokens": state.intervened_tokens,
                               "intervention_dose": round(state.intervened_tokens / state.tokens, 5)})
                bar.update(state.step, last_loss, tokens_per_second)
                log_loss, log_targets, clock, clock_tokens = 0.0, 0, time.perf_counter(), 0
            if on_step is not None:
                on_step(state.step, last_loss)
            stopping = stop.requested(accelerator)
            if state.step % cfg.checkpoint_every == 0 or last or stopping:
                state.sampler = sampler.state_dict()
                _save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
            if stopping and not last:
                raise TrainingStopped(f"stopped at step {state.step} of {total}; checkpoint saved, continue with "
                                      f"--resume")

    model_dir = out / "model"
    _save_final(accelerator, model, tokenizer, model_dir)
    if accelerator.is_main_process:
        from safepretrain.train.report import plot_loss, write_run_manifest

        plot_loss(out / "metrics.jsonl", out / "loss.png", title=f"{cfg.kind}: {cfg.model.name}")
        write_run_manifest(out, cfg, state, streams)
    accelerator.wait_for_everyone()
    return RunResult(out, state.step, state.tokens, state.intervened_tokens, last_loss, tokens_per_second, model_dir)


def _global_mean(accelerator, loss_sum: float, targets: int) -> float:
    """Mean loss per target token over all ranks (each rank only sees its slice of the batch)."""
    if accelerator.num_processes == 1:
        return loss_sum / max(targets, 1)
    totals = accelerator.reduce(torch.tensor([loss_sum, targets], dtype=torch.float64, device=accelerator.device),
                                reduction="sum")
    return float(totals[0] / totals[1].clamp(min=1))


def _train_step(accelerator, model, optimizer, new_rows: NewTokenRows, streams, picks,
                cfg: TrainConfig) -> tuple[float, int]:
    """One optimizer step over this rank's slice of the global batch; returns this rank's (loss sum, targets)."""
    o = cfg.optim
    inputs, labels = collate(streams, picks, o.seq_len)
    global_targets = int((labels != IGNORE_INDEX).sum())
    # DDP averages gradients over ranks, so each rank scales its summed loss by world size / global target count.
    scale = accelerator.num_processes / max(global_targets, 1)
    rank, world = accelerator.process_index, accelerator.num_processes
    loss_total, local_targets = 0.0, 0
    for micro in range(o.grad_accum):
        first = (micro * world + rank) * o.micro_batch
        x = inputs[first:first + o.micro_batch].to(accelerator.device)
        y = labels[first:first + o.micro_batch].to(accelerator.device)
        sync = micro == o.grad_accum - 1
        with (contextlib.nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
            accelerator.backward(loss * scale)
        loss_total += loss.item()
        local_targets += int((y != IGNORE_INDEX).sum())
    if o.grad_clip:
        accelerator.clip_grad_norm_(model.parameters(), o.grad_clip)
    new_rows.take_gradients()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    new_rows.step()
    return loss_total, local_targets


class NewTokenRows:
    """The embedding rows of tokens added to a pretrained vocabulary, trained by their own AdamW at
    ``optim.new_token_lr`` (following the main schedule). The main optimizer sees zero gradient there, and the rows
    are written back after its step, so its weight decay does not touch them either. Input and output embeddings are
    handled alike, tied (one matrix, as in SmolLM2) or not."""

    def __init__(self, model, token_ids: tuple[int, ...], optim):
        embeddings = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
        self.weights = list({id(w): w for w in embeddings}.values()) if token_ids else []
        self.ids = torch.tensor(token_ids, dtype=torch.long, device=embeddings[0].device)
        self.rows = [torch.nn.Parameter(w.detach()[self.ids].clone()) for w in self.weights]
        self.base_lr = optim.new_token_lr
        self.optimizer = (torch.optim.AdamW(self.rows, lr=self.base_lr, betas=optim.betas, weight_decay=0.0)
                          if self.rows else None)

    def set_lr(self, scale: float) -> None:
        for group in self.optimizer.param_groups if self.optimizer else ():
            group["lr"] = self.base_lr * scale

    def take_gradients(self) -> None:
        for weight, rows in zip(self.weights, self.rows):
            rows.grad = weight.grad[self.ids].clone()
            weight.grad[self.ids] = 0

    def step(self) -> None:
        if self.optimizer is None:
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for weight, rows in zip(self.weights, self.rows):
                weight[self.ids] = rows.to(weight.dtype)

    def state_dict(self) -> dict:
        return {"rows": [r.detach().cpu() for r in self.rows], "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for rows, saved in zip(self.rows, state["rows"]):
                rows.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])


def build_model(cfg: TrainConfig, tokenizer):
    """A preset initialised from the seed, or a saved HF model; its vocabulary must cover the tokenizer's."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from safepretrain.train.models import PRESETS, preset_config

    name = cfg.model.name
    if name in PRESETS:
        config = preset_config(name, vocab_size=_round_up(len(tokenizer), 64))
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(cfg.seed)
        return LlamaForCausalLM(config)
    path = Path(name)
    if not (path / "config.json").is_file():
        raise UserError(f"model.name {name!r} is neither a preset ({', '.join(PRESETS)}) nor a saved model folder "
                        "(no config.json there)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load the model ({e})") from None
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise UserError(f"vocabulary mismatch: the tokenizer has {len(tokenizer)} tokens but the model {path} only "
                        f"{model.get_input_embeddings().num_embeddings} embeddings; use the model's own tokenizer")
    return model


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _load_streams(cfg: TrainConfig, tokenizer, cache_dir: Path) -> list[TokenStream]:
    if not cfg.data.train:
        raise UserError("no training data: set data.train (a list of JSONL files) or pass --data FILE")
    if cfg.curriculum.start > 0 and not cfg.data.intervened:
        raise UserError("curriculum.start is set but data.intervened is empty: the curriculum needs an intervened "
                        "stream to switch to")
    options = Tokenization(
        text_field=cfg.data.text_field, masked_token_ids=_token_ids(tokenizer, cfg.masking.tokens),
        mask_after_unsafe=cfg.masking.after_unsafe, train_on_prompt=cfg.masking.train_on_prompt,
        reflection_format=reflection_format(cfg.model.reflection_format),
    )
    streams = [load_stream(cfg.data.train, tokenizer, options, cache_dir)]
    if cfg.data.intervened:
        streams.append(load_stream(cfg.data.intervened, tokenizer, options, cache_dir))
    for paths, stream in zip((cfg.data.train, cfg.data.intervened), streams):
        if stream.n_blocks(cfg.optim.seq_len) == 0:
            raise UserError(f"{', '.join(paths)}: {len(stream.tokens)} tokens, fewer than one block of "
                            f"optim.seq_len={cfg.optim.seq_len}; lower seq_len or add data")
    return streams


def _token_ids(tokenizer, tokens: tuple[str, ...], field: str = "masking.tokens") -> tuple[int, ...]:
    ids = []
    for token in tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise UserError(f"{field}: {token!r} is not a single token of this tokenizer")
        ids.append(token_id)
    return tuple(ids)


def total_steps(cfg: TrainConfig, main: TokenStream, global_batch: int) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    if cfg.max_tokens:
        return max(1, math.ceil(cfg.max_tokens / (global_batch * cfg.optim.seq_len)))
    return max(1, math.ceil(cfg.epochs * main.n_blocks(cfg.optim.seq_len) / global_batch))


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices, not norms or biases (nanoGPT's rule: decay iff the parameter has 2+ dims)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _mixed_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if precision == "bf16" else "no"


# --- the run folder --------------------------------------------------------------------------------------------------


def _prepare_out(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    import yaml

    saved = out / "config.yaml"
    if resume:
        if not saved.is_file():
            raise UserError(f"{out}: nothing to resume (no config.yaml); start the run without --resume")
        before = completed(yaml.safe_load(saved.read_text(encoding="utf-8")))
        now = to_dict(cfg)
        changed = sorted(_diff(before, now))
        if changed:
            raise UserError(f"{saved}: --resume needs the same config, but these fields changed: {', '.join(changed)}")
        return
    if _is_main_process():
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise UserError(f"output folder {out} is not empty; pass --resume to continue that run, "
                                "--overwrite to start over, or choose another out")
            shutil.rmtree(out)
        check_output_dir(out, overwrite=False)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(saved) as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if _normalise(a) != _normalise(b) else []


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def has_checkpoint(out: Path) -> bool:
    """True when ``out`` holds a checkpoint that ``train(..., resume=True)`` can continue from."""
    return bool(_checkpoint_dirs(Path(out))) and (Path(out) / "config.yaml").is_file()


def _checkpoint_dirs(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")),
                  key=lambda p: int(p.name.removeprefix("step-")))


def _save_checkpoint(accelerator, out: Path, state: Progress, keep: int) -> None:
    """Write the checkpoint under a temporary name, then rename: a crash mid-save never leaves a half checkpoint."""
    final = out / CHECKPOINTS / f"step-{state.step:08d}"
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(partial / "trainer.json", state.__dict__)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in _checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _load_checkpoint(accelerator, out: Path) -> Progress:
    checkpoints = _checkpoint_dirs(out)
    if not checkpoints:
        raise UserError(f"{out}: no checkpoint to resume from yet; start the run again without --resume "
                        "(with --overwrite)")
    latest = checkpoints[-1]
    try:
        state = Progress(**json.loads((latest / "trainer.json").read_text(encoding="utf-8")))
        accelerator.load_state(str(latest))
    except Exception as e:  # any unreadable piece (truncated safetensors, bad pickle, bad JSON) means a corrupt checkpoint
        raise UserError(f"checkpoint {latest} is corrupt or incomplete ({type(e).__name__}: {e}); delete it to resume "
                        "from the one before".replace("\n", " ")) from None
    return state


def _save_final(accelerator, model, tokenizer, model_dir: Path) -> None:
    from safepretrain.io import atomic_directory

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        with atomic_directory(model_dir, overwrite=True) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
    accelerator.wait_for_everyone()


class _MetricsLog:
    """metrics.jsonl, appended as the run goes; a resumed run first drops what came after its checkpoint."""

    def __init__(self, path: Path, keep_upto: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= keep_upto]
        with atomic_open(path) as f:
            f.writelines(line + "\n" for line in kept)

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(dumps(record) + "\n")


class _StopRequest:
    """Ctrl-C asks the loop to stop at the end of the current step and checkpoint; a second Ctrl-C stops at once."""

    def __init__(self):
        self.flag = False
        self._previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def requested(self, accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


class _progress_bar:
    """A rich progress bar with loss, tokens/s and ETA (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                     TimeRemainingColumn())
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.total, completed=self.start, loss="-", tps="-")
        return self

    def update(self, step: int, loss: float, tokens_per_second: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=f"{loss:.3f}", tps=f"{tokens_per_second:,.0f}")

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)
        return False
