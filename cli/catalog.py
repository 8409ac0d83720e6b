"""`amgan-search catalog ...` (import, info; synth and sheet are attached from synthetic.py) and
`amgan-search data ...` (the data sets in data_manifest.csv)."""

from __future__ import annotations

import json

import click

# amgan_search.sources.FORMATS, written out so that `--help` does not import numpy (a test keeps
# the two equal).
FORMATS = ("synthetic", "deepfashion-synthesis", "shopping100k", "csv")


def _names(attributes: str | None) -> list[str] | None:
    """--attributes a,b,c -> ["a", "b", "c"]."""
    return [a.strip() for a in attributes.split(",")] if attributes else None


@click.group()
def catalog() -> None:
    """Build, import and inspect catalogs."""


@catalog.command("import")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="Layout of SRC: a synthetic render, DeepFashion-Synthesis (G2.h5 + .mat files), "
                   "Shopping100k split files, or a CSV of id, path, attributes.")
@click.argument("src", type=click.Path())
@click.option("--db", "db_path", type=click.Path(), required=True,
              help="Catalog DB to write (replaced only when the import succeeds).")
@click.option("--attributes", default=None,
              help="Comma-separated attribute names: Shopping100k's attributes in attr_num.txt order, "
                   "or the CSV columns that are attributes.")
@click.option("--image-root", type=click.Path(), default=None,
              help="Shopping100k: folder the paths in imgs_*.txt are relative to (default: SRC).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_(fmt: str, src: str, db_path: str, attributes: str | None, image_root: str | None,
            quiet: bool) -> None:
    """Import SRC into a catalog DB."""
    from amgan_search.catalog import import_catalog

    cat = import_catalog(fmt, src, db_path, attributes=_names(attributes), progress=not quiet,
                         image_root=image_root)
    click.echo(f"{db_path}: {cat.summary()}")


@catalog.command()
@click.option("--db", "db_path", type=click.Path(), default=None, help="Catalog DB.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Instead of --db: count the labels of SRC in this format without importing "
                   "(images are not needed, e.g. DeepFashion-Synthesis without G2.h5).")
@click.argument("src", type=click.Path(), required=False)
@click.option("--attributes", default=None, help="With --format: as for `catalog import`.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def info(db_path: str | None, fmt: str | None, src: str | None, attributes: str | None,
         as_json: bool) -> None:
    """Counts per split and per attribute value, of a catalog DB or of a data set's labels."""
    from amgan_search.catalog import catalog_info, counts_table
    from amgan_search.errors import UserError

    if (db_path is None) == (fmt is None) or (fmt is not None and src is None):
        raise UserError("catalog info: give either --db DB, or --format FORMAT SRC")
    title, report = catalog_info(db_path, fmt, src, attributes=_names(attributes))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(counts_table(title, report["schema"], report["counts"]))


@click.group()
def data() -> None:
    """The data sets the project knows (data_manifest.csv)."""


@data.command("list")
def list_() -> None:
    """List the known data sets and where to get them."""
    from amgan_search.manifest import describe, load_manifest

    for ds in load_manifest().values():
        click.echo(describe(ds))


@data.command()
@click.argument("name")
@click.option("--root", type=click.Path(), required=True, help="Folder holding the data set's files.")
def verify(name: str, root: str) -> None:
    """Check that a data set's files exist and match their known sha256."""
    from amgan_search.errors import UserError
    from amgan_search.manifest import verify_report

    table, problem = verify_report(name, root)
    click.echo(table)
    if problem:
        raise UserError(problem)
