"""`amgan-search catalog synth` and `catalog sheet`: the synthetic catalog, rendered and shown."""

from __future__ import annotations

import click

# The limits of amgan_search.synthetic.catalog (MAX_N, MAX_SEED, MIN_SIZE..MAX_SIZE; why there),
# written out so that `--help` does not import numpy (a test keeps them equal).
MAX_N, MAX_SEED, MIN_SIZE, MAX_SIZE = 1_000_000, 2**32 - 1, 16, 1024


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(1, MAX_N), default=10000, show_default=True,
              help="Number of images to render.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed: the same seed writes byte-identical files.")
@click.option("--size", type=click.IntRange(MIN_SIZE, MAX_SIZE), default=128, show_default=True,
              help="Image side in pixels (square images).")
@click.option("--attributes", default="color,sleeve", show_default=True,
              help="Comma-separated attributes to label and vary: color, sleeve, pattern, "
                   "neckline (all four: the harder setting).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg"]), default="png",
              show_default=True, help="Image file format (jpg quality varies per scene).")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Fraction of items in the test split (chosen by the seed).")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="Render processes [default: one per CPU core, one for small catalogs].")
@click.option("--force", "--overwrite", "force", is_flag=True,
              help="Replace OUT_DIR when it holds a synthetic catalog (--overwrite is the same flag). "
                   "A folder holding anything else is never written into.")
def synth(out_dir, n, seed, size, attributes, fmt, test_fraction, workers, force) -> None:
    """Render a synthetic catalog into OUT_DIR: images/, catalog.csv, schema.json."""
    import time

    from amgan_search.synthetic import load_scene_table, value_counts, write_catalog

    names = [a.strip() for a in attributes.split(",") if a.strip()]
    start = time.perf_counter()
    out = write_catalog(out_dir, n, seed=seed, size=size, attributes=names, fmt=fmt,
                        test_fraction=test_fraction, overwrite=force, workers=workers)
    elapsed = time.perf_counter() - start
    rows = load_scene_table(out)
    click.echo(f"wrote {len(rows)} images ({size}x{size} {fmt}) to {out} in {elapsed:.1f} s "
               f"({len(rows) / elapsed:.0f} images/s)")
    for name, counts in value_counts(rows).items():
        click.echo(f"{name}: " + ", ".join(f"{value} {count}" for value, count in counts.items()))


@click.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_png", default="sheet.png", show_default=True,
              help="PNG file to write: a new file, or a sheet this command wrote (never the "
                   "catalog's files or any other file).")
@click.option("--per-row", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Images per attribute value (one row per value).")
@click.option("--size", type=click.IntRange(MIN_SIZE, MAX_SIZE), default=64, show_default=True,
              help="Side of each thumbnail in pixels.")
def sheet(catalog_dir, out_png, per_row, size) -> None:
    """Draw a contact sheet of CATALOG_DIR: one labelled row of images per attribute value."""
    from amgan_search.synthetic import contact_sheet

    out = contact_sheet(catalog_dir, out_png, per_row=per_row, size=size)
    click.echo(f"wrote {out}")
