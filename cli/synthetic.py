import click


@click.command()
def synth() -> None:
    """Render a synthetic catalog."""


@click.command()
def sheet() -> None:
    """Draw a contact sheet."""
