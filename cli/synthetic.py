"""`amgan-search catalog synth` and `catalog sheet`: the synthetic catalog, rendered and shown."""

from __future__ import annotations

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", "n", type=int, default=10000, show_default=True,
              help="Number of images to render.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed: the same seed writes byte-identical files.")
@click.option("--size", type=int, default=128, show_default=True,
              help="Image side in pixels (square images).")
@click.option("--attributes", default="color,sleeve", show_default=True,
              help="Comma-separated attributes to label and vary: color, sleeve, pattern.")
@click.option("--format", "fmt", default="png", show_default=True,
              help="Image file format: png or jpg (jpg quality varies per scene).")
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Fraction of items in the test split (chosen by the seed).")
@click.option("--workers", type=int, default=None,
              help="Render processes [default: one per CPU core, one for small catalogs].")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists and is not empty.")
def synth(out_dir, n, seed, size, attributes, fmt, test_fraction, workers, overwrite) -> None:
    """Render a synthetic catalog into OUT_DIR: images/, catalog.csv, schema.json."""
    import time

    from amgan_search.errors import UserError
    from amgan_search.synthetic import NotEmpty, load_scene_table, value_counts, write_catalog

    names = [a.strip() for a in attributes.split(",") if a.strip()]
    start = time.perf_counter()
    try:
        out = write_catalog(out_dir, n, seed=seed, size=size, attributes=names, fmt=fmt,
                            test_fraction=test_fraction, overwrite=overwrite, workers=workers)
    except NotEmpty as exc:
        raise UserError(f"{exc.path}: exists and is not empty; overwrite (--overwrite) replaces it"
                        ) from None
    elapsed = time.perf_counter() - start
    rows = load_scene_table(out)
    click.echo(f"wrote {len(rows)} images ({size}x{size} {fmt}) to {out} in {elapsed:.1f} s "
               f"({len(rows) / elapsed:.0f} images/s)")
    for name, counts in value_counts(rows).items():
        click.echo(f"{name}: " + ", ".join(f"{value} {count}" for value, count in counts.items()))


@click.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_png", default="sheet.png", show_default=True,
              help="PNG file to write.")
@click.option("--per-row", type=int, default=8, show_default=True,
              help="Images per attribute value (one row per value).")
@click.option("--size", type=int, default=64, show_default=True,
              help="Side of each thumbnail in pixels.")
def sheet(catalog_dir, out_png, per_row, size) -> None:
    """Draw a contact sheet of CATALOG_DIR: one labelled row of images per attribute value."""
    from amgan_search.synthetic import contact_sheet

    out = contact_sheet(catalog_dir, out_png, per_row=per_row, size=size)
    click.echo(f"wrote {out}")
