import click


@click.group()
def index() -> None:
    """Build and inspect catalog indexes."""


@click.command()
def query() -> None:
    """Search the catalog."""


@click.command()
def benchmark() -> None:
    """Run the paper's metrics."""
