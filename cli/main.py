"""`amgan-search`: the command group. Commands import torch and friends inside their bodies, so
`--help` answers at once; a UserError anywhere becomes one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click

from amgan_search import __version__
from amgan_search.errors import UserError
from amgan_search.outputs import OutputExists


class Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OutputExists as exc:  # every command that replaces its output on request says --force
            click.echo(f"error: {exc} (pass --force to replace it)", err=True)
            ctx.exit(UserError.exit_code)
        except UserError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(UserError.exit_code)
        except OSError as exc:
            # A file the system refused (an output under a file, a read-only place, a full disk):
            # the user's input, so one line; an OSError without a file name is a bug and shows.
            if exc.filename is None:
                raise
            click.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
            ctx.exit(UserError.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def one_line(exc: UserError) -> str:
    """The user's message of a UserError, also when a DataLoader worker raised it: torch re-raises
    it in the main process with the worker's whole traceback as its message, whose last line is
    the original `UserError: message`."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split("UserError: ", 1)[-1]
    return text


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="amgan-search")
def cli() -> None:
    """Edit a garment photo toward wanted attributes with AMGAN and find the nearest catalog items."""


@cli.group()
def train() -> None:
    """Train the CNN+CAM classifier, the evaluation classifier, AMGAN and its baselines, and the
    disentangled attribute embedding (ADDE)."""


def _register() -> None:
    from amgan_search.cli import catalog, demo, edit, evaluate, retrieval, serve, synthetic
    from amgan_search.cli import train as train_cli
    from amgan_search.cli.compare import compare

    catalog.catalog.add_command(synthetic.synth)
    catalog.catalog.add_command(synthetic.sheet)
    cli.add_command(catalog.catalog)
    cli.add_command(catalog.data)
    train.add_command(train_cli.train_classifier, "classifier")
    train.add_command(train_cli.train_amgan, "amgan")
    train.add_command(train_cli.train_adde, "adde")
    train.add_command(train_cli.export_model, "export")
    train.add_command(train_cli.validation)
    cli.add_command(train_cli.model)
    cli.add_command(edit.edit)
    cli.add_command(edit.classify)
    cli.add_command(evaluate.evaluate_classifier, "evaluate-classifier")
    cli.add_command(evaluate.evaluate_edits, "evaluate-edits")
    cli.add_command(evaluate.benchmark)
    cli.add_command(compare)
    cli.add_command(retrieval.index)
    cli.add_command(retrieval.query)
    cli.add_command(demo.demo)
    cli.add_command(serve.serve)


_register()


def main() -> None:
    cli(prog_name="amgan-search")


if __name__ == "__main__":
    sys.exit(main())
