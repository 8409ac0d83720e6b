"""`amgan-search catalog ...` (import, info; synth and sheet are attached from synthetic.py) and
`amgan-search data ...` (the data sets in data_manifest.csv)."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import click

from amgan_search.errors import UserError

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
              help="Catalog DB file to write. An existing file is replaced only when it is a catalog "
                   "DB, and only once the import succeeds; two imports to one DB run in turn.")
@click.option("--attributes", default=None,
              help="Comma-separated attribute names: Shopping100k's attributes in attr_num.txt order, "
                   "or the CSV columns that are attributes.")
@click.option("--image-root", type=click.Path(), default=None,
              help="Shopping100k: folder the paths in imgs_*.txt are relative to (default: SRC).")
@click.option("--no-check-images", is_flag=True,
              help="Do not decode every image before importing (only check that each file exists); "
                   "an unreadable image then fails the command that reads it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_(fmt: str, src: str, db_path: str, attributes: str | None, image_root: str | None,
            no_check_images: bool, quiet: bool) -> None:
    """Import SRC into a catalog DB (every image is decoded first; a bad one is named by its row)."""
    from amgan_search.catalog import import_catalog

    cat = import_catalog(fmt, src, db_path, attributes=_names(attributes), progress=not quiet,
                         image_root=image_root, check_images=not no_check_images)
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
    from amgan_search.catalog import catalog_info

    if (db_path is None) == (fmt is None) or (fmt is not None and src is None):
        raise UserError("catalog info: give either --db DB, or --format FORMAT SRC")
    title, report = catalog_info(db_path, fmt, src, attributes=_names(attributes))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(counts_table(title, report["schema"], report["counts"]))


def counts_table(title: str, schema: Mapping[str, Sequence[str]], counts: dict) -> str:
    """The counts as text: items per split, then one row per attribute value (and missing)."""
    splits = [s for s in counts if s != "all"]
    lines = [f"{title}, {counts['all']['items']:,} items",
             "  " + ", ".join(f"{s} {counts[s]['items']:,}" for s in splits)]
    width = max(len(v) for values in schema.values() for v in values) + 2
    columns = [*splits, "all"]
    for name, values in schema.items():
        lines.append(f"{name}:" + " " * (width + 2 - len(name) - 1) + "".join(f"{s:>10}" for s in columns))
        for value in values:
            row = "".join(f"{counts[s]['values'][name][value]:>10,}" for s in columns)
            lines.append(f"  {value:<{width}}{row}")
        if counts["all"]["missing"][name]:
            row = "".join(f"{counts[s]['missing'][name]:>10,}" for s in columns)
            lines.append(f"  {'(missing)':<{width}}{row}")
    return "\n".join(lines)


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
    from amgan_search.manifest import verify_report

    table, problem = verify_report(name, root)
    click.echo(table)
    if problem:
        raise UserError(problem)
