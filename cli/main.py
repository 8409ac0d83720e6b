"""`amgan-search`: the command group. Commands import torch and friends inside their bodies, so
`--help` answers at once; a UserError anywhere becomes one line on stderr and exit status 2."""

from __future__ import annotations

import sys

import click

from amgan_search import __version__
from amgan_search.errors import UserError


class Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(UserError.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="amgan-search")
def cli() -> None:
    """Edit a garment photo toward wanted attributes with AMGAN and find the nearest catalog items."""


@cli.group()
def train() -> None:
    """Train the CNN+CAM classifier, the evaluation classifier, AMGAN and its baselines."""


def _register() -> None:
    from amgan_search.cli import catalog, demo, edit, evaluate, retrieval, synthetic
    from amgan_search.cli import train as train_cli

    catalog.catalog.add_command(synthetic.synth)
    catalog.catalog.add_command(synthetic.sheet)
    cli.add_command(catalog.catalog)
    cli.add_command(catalog.data)
    train.add_command(train_cli.train_classifier, "classifier")
    train.add_command(train_cli.train_amgan, "amgan")
    train.add_command(train_cli.export_model, "export")
    cli.add_command(edit.edit)
    cli.add_command(edit.classify)
    cli.add_command(evaluate.evaluate_classifier, "evaluate-classifier")
    cli.add_command(evaluate.evaluate_edits, "evaluate-edits")
    cli.add_command(evaluate.benchmark)
    cli.add_command(retrieval.index)
    cli.add_command(retrieval.query)
    cli.add_command(demo.demo)


_register()


def main() -> None:
    cli(prog_name="amgan-search")


if __name__ == "__main__":
    sys.exit(main())
