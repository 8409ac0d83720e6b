"""`amgan-search catalog ...` (import, info; synth and sheet are attached from synthetic.py) and
`amgan-search data ...` (the data sets in data_manifest.csv)."""

from __future__ import annotations

import json

import click

FORMATS = ("synthetic", "deepfashion-synthesis", "shopping100k", "csv")


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

    names = [a.strip() for a in attributes.split(",")] if attributes else None
    cat = import_catalog(fmt, src, db_path, attributes=names, progress=not quiet, image_root=image_root)
    splits = ", ".join(f"{s} {cat.count(s):,}" for s in cat.splits())
    attrs = ", ".join(f"{a.name} ({len(a.values)})" for a in cat.schema.attributes)
    click.echo(f"{db_path}: {cat.count():,} items ({splits}); attributes {attrs}")


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
    from amgan_search.errors import UserError

    if (db_path is None) == (fmt is None) or (fmt is not None and src is None):
        raise UserError("catalog info: give either --db DB, or --format FORMAT SRC")
    if db_path is not None:
        from amgan_search.catalog import Catalog

        cat = Catalog.open(db_path)
        schema, counts = cat.schema, cat.counts()
        header = {"db": str(cat.path), "format": cat.format, "root": str(cat.root),
                  "created": cat.meta.get("created")}
        title = f"{cat.path}: {cat.format} catalog"
    else:
        from amgan_search.datasets import read_source, source_counts

        names = [a.strip() for a in attributes.split(",")] if attributes else None
        source = read_source(fmt, src, attributes=names, check_images=False)
        schema, counts = source.schema, source_counts(source)
        header = {"src": str(src), "format": fmt, "root": str(source.root)}
        title = f"{src}: {fmt} labels (images not checked)"
    if as_json:
        click.echo(json.dumps({**header, "schema": schema.to_dict(), "counts": counts}, indent=2))
        return
    splits = [s for s in counts if s != "all"]
    click.echo(f"{title}, {counts['all']['items']:,} items")
    click.echo("  " + ", ".join(f"{s} {counts[s]['items']:,}" for s in splits))
    width = max(len(v) for a in schema.attributes for v in a.values) + 2
    columns = [*splits, "all"]
    for attr in schema.attributes:
        click.echo(f"{attr.name}:" + " " * (width + 2 - len(attr.name) - 1)
                   + "".join(f"{s:>10}" for s in columns))
        for value in attr.values:
            row = "".join(f"{counts[s]['values'][attr.name][value]:>10,}" for s in columns)
            click.echo(f"  {value:<{width}}{row}")
        if counts["all"]["missing"][attr.name]:
            row = "".join(f"{counts[s]['missing'][attr.name]:>10,}" for s in columns)
            click.echo(f"  {'(missing)':<{width}}{row}")


@click.group()
def data() -> None:
    """The data sets the project knows (data_manifest.csv)."""


@data.command("list")
def list_() -> None:
    """List the known data sets and where to get them."""
    from amgan_search.manifest import load_manifest

    for ds in load_manifest().values():
        images = f"{ds.images:,} images" if ds.images else "any size"
        click.echo(f"{ds.name}: {images}; {ds.attributes}; license: {ds.license}")
        click.echo(f"    files: {', '.join(ds.files)}")
        click.echo(f"    source: {ds.source}")


@data.command()
@click.argument("name")
@click.option("--root", type=click.Path(), required=True, help="Folder holding the data set's files.")
def verify(name: str, root: str) -> None:
    """Check that a data set's files exist and match their known sha256."""
    from amgan_search.errors import UserError
    from amgan_search.manifest import failures, verify as verify_files

    results = verify_files(name, root)
    width = max(len(f) for f, _ in results)
    for file, status in results:
        click.echo(f"{file:<{width}}  {status}")
    bad = failures(results)
    if bad:
        raise UserError(f"{root}: {len(bad)} of {len(results)} {name} files missing or mismatched "
                        f"({', '.join(f'{f}: {s}' for f, s in bad)})")
