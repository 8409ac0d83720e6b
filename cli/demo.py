"""`amgan-search demo`: the main job on the embedded default."""

from functools import partial
from pathlib import Path

import click

from amgan_search.cli.options import device_option


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for report.html, the edits and the contact sheets.")
@click.option("--n", "n", type=click.IntRange(min=50), default=3000, show_default=True,
              help="Items in the demo catalog (rendered once, then reused).")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Results per query.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Image-decoding workers for the index build.")
@device_option("torch device (default: cuda when available, else cpu).")
def demo(out: Path, n: int, k: int, workers: int, device: str | None) -> None:
    """Render a catalog, index it, run example queries and write an HTML report.

    The catalog, its DB and the default index live under $AMGAN_SEARCH_HOME
    (default ~/.cache/amgan-search) and are reused by later runs and by `amgan-search query`.
    """
    from amgan_search.index.demo import run_demo

    report = run_demo(out, n=n, k=k, workers=workers, device=device, log=partial(click.echo, err=True))
    click.echo(f"report: {report.resolve()}")
    click.echo(f"contact sheets: {report.parent.resolve()}/*/contact.png")
    click.echo("next: amgan-search query " + str((report.parent / "one-attribute" / "query.png"))
               + " --color green")
