"""The ``safepretrain`` command: one sub-command group per stage of the pipeline."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from safepretrain import __version__
from safepretrain.errors import UserError
from safepretrain.logs import quiet_libraries

app = typer.Typer(
    name="safepretrain", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Pretraining-stage safety alignment: MedSafetyWorld, data interventions, training, safe decoding, evaluation.",
)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"safepretrain {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """safepretrain command line."""


def _register() -> None:
    from safepretrain.decode.cli import generate
    from safepretrain.eval.cli import evaluate
    from safepretrain.experiment.cli import app as experiment_app
    from safepretrain.pipeline.cli import intervene, report_card, scorer_app, srp_sft
    from safepretrain.serve.cli import playground, serve
    from safepretrain.train.cli import model_app, tokenizer_app, train_app
    from safepretrain.world.cli import app as world_app

    app.add_typer(world_app, name="world")
    app.add_typer(tokenizer_app, name="tokenizer")
    app.add_typer(model_app, name="model")
    app.add_typer(train_app, name="train")
    app.command()(intervene)
    app.add_typer(scorer_app, name="scorer")
    app.command("report-card")(report_card)
    app.command("srp-sft")(srp_sft)
    app.command()(generate)
    app.command("eval")(evaluate)
    app.add_typer(experiment_app, name="experiment")
    app.command()(serve)
    app.command()(playground)


def main() -> None:
    """Entry point: user errors print one red line and exit 2; everything else is a bug and keeps its traceback."""
    quiet_libraries()
    _register()
    try:
        app()
    except UserError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
