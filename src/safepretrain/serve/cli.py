"""``safepretrain serve`` and ``safepretrain playground``: models behind an OpenAI-compatible API and a web page."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from safepretrain.errors import UserError

console = Console()

MODELS_HELP = "Model folders to serve, each as PATH or NAME=PATH (the name clients use; default: the folder's name)."


def serve(
    models: list[str] = typer.Argument(..., help=MODELS_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; loopback by default (no auth is done)."),
    port: int = typer.Option(8000, "--port"),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests decoded together per model."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="The most tokens one answer may ask for."),
    threads: int = typer.Option(0, "--threads", help="Torch CPU threads (0 = torch's default)."),
) -> None:
    """Serve models over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) with the
    toolkit's decoding modes per request; the Safe Playground is at /playground."""
    _run(models, host, port, max_batch, max_tokens, threads)


def playground(
    models: list[str] = typer.Argument(..., help=MODELS_HELP),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_batch: int = typer.Option(8, "--max-batch"),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    threads: int = typer.Option(0, "--threads"),
) -> None:
    """The Safe Playground: one prompt to several models and decoding modes, answers side by side as they stream,
    reflections inline, unsafe ones highlighted. Open the printed address in a browser."""
    _run(models, host, port, max_batch, max_tokens, threads, page="/playground")


def parse_models(specs: list[str]) -> dict[str, Path]:
    """NAME=PATH or PATH (named by its folder, or by its parent when the folder is called ``model``)."""
    named: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        folder = Path(path)
        name = name or (folder.parent.name if folder.name == "model" else folder.name)
        if name in named:
            raise UserError(f"two models are called {name!r}; name them with NAME=PATH")
        named[name] = folder
    return named


def _run(specs: list[str], host: str, port: int, max_batch: int, max_tokens: int, threads: int,
         page: str = "/") -> None:
    import torch
    import uvicorn

    from safepretrain.serve.api import Limits, create_app
    from safepretrain.serve.engine import ModelEngine

    if max_batch < 1 or max_tokens < 1:
        raise UserError("--max-batch and --max-tokens must be at least 1")
    if threads:
        torch.set_num_threads(threads)
    engines = {}
    for name, path in parse_models(specs).items():
        with console.status(f"loading {name} from {path}"):
            engines[name] = ModelEngine.load(name, path, max_batch=max_batch)
    limits = Limits(max_tokens=max_tokens, default_max_tokens=min(128, max_tokens), max_batch=max_batch)
    app = create_app(engines, limits)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"serving {', '.join(engines)} at [bold]http://{shown}:{port}{page}[/] (Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print("[yellow]warning:[/] bound beyond loopback; this server has no authentication")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    for engine in engines.values():
        engine.stop()


__all__ = ["parse_models", "playground", "serve"]
