import click


@click.command()
def train_amgan() -> None:
    """Train AMGAN or a baseline."""


@click.command()
def edit() -> None:
    """Edit images toward attributes."""
