"""`amgan-search demo`: the main job on the embedded default."""

from functools import partial
from pathlib import Path

import click

from amgan_search.cli.options import WORKERS, check_own_folder, device_option, writable_dir
from amgan_search.errors import UserError


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="demo-out",
              show_default=True, callback=writable_dir,
              help="Folder for report.html, the edits and the contact sheets (a folder holding "
                   "other files is refused).")
# 3,000 items rendered in 140 s on two busy cores and take 93 MB, so the cap of 100,000 is
# over an hour and about 3 GB: past that it is no longer a demo.
@click.option("--n", "n", type=click.IntRange(50, 100_000), default=3000, show_default=True,
              help="Items in the demo catalog (rendered once, then reused).")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Results per query.")
@click.option("--workers", type=WORKERS, default=2, show_default=True,
              help="Image-decoding workers for the index build.")
@device_option("torch device (default: cuda when available, else cpu).")
def demo(out: str, n: int, k: int, workers: int, device: str | None) -> None:
    """Render a catalog, index it, run example queries and write an HTML report.

    The catalog, its DB and the default index live under $AMGAN_SEARCH_HOME
    (default ~/.cache/amgan-search) and are reused by later runs and by `amgan-search query`.
    """
    from amgan_search.index.demo import run_demo

    out = Path(out)  # a str until here, so an empty --out is refused, not read as "."
    _claim_out(out)  # before the catalog is rendered: a folder of someone else's files fails at once
    report = run_demo(out, n=n, k=k, workers=workers, device=device, log=partial(click.echo, err=True))
    click.echo(f"report: {report.resolve()}")
    click.echo(f"contact sheets: {report.parent.resolve()}/*/contact.png")
    click.echo("next: amgan-search query " + str((report.parent / "one-attribute" / "query.png"))
               + " --color green")


def _claim_out(out: Path) -> None:
    """--out is new or empty, or an earlier demo's: only its own names, and a report.json of the
    demo's beside any report.html (written last, so a killed run leaves only example folders)."""
    import json

    from amgan_search.index.demo import EXAMPLES

    check_own_folder(out, ("report.html", "report.json", *(e.name for e in EXAMPLES)))
    summary, page = out / "report.json", out / "report.html"
    if not (summary.exists() or page.exists()):
        return
    try:
        ours = isinstance(json.loads(summary.read_text()).get("examples"), list)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f"{out}: its report files were not written by the demo; "
                        "choose a new or empty output folder")
