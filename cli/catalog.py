import click


@click.group()
def catalog() -> None:
    """Build, import and inspect catalogs."""


@click.group()
def data() -> None:
    """The data sets the project knows (data_manifest.csv)."""
