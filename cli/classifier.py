import click


@click.command()
def train_classifier() -> None:
    """Train the attribute classifier."""


@click.command()
def classify() -> None:
    """Predict attributes of images."""
