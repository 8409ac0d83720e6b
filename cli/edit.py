"""`amgan-search edit` (edit images toward attributes) and `amgan-search classify` (read their attributes)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from amgan_search.cli.options import (AttributeCommand, device_option, load_classifier_option,
                                      offered_attributes, option_value, parse_pairs, schema_in,
                                      writable_dir)
from amgan_search.errors import UserError


def _model_attributes(args) -> dict[str, list[str]]:
    """The attributes of the model the arguments name (--model, else the shipped --method), then
    the synthetic ones, so --color, --sleeve and --pattern are always there."""
    from amgan_search.checkpoint import CONFIG
    from amgan_search.registry import SHIPPED_DIR

    model = option_value(args, "--model")
    folder = Path(model) if model else SHIPPED_DIR / (option_value(args, "--method") or "amgan")
    return offered_attributes(schema_in(folder / CONFIG))


@click.command(cls=AttributeCommand, attributes=_model_attributes)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--set", "sets", multiple=True, metavar="ATTRIBUTE=VALUE",
              help="Any attribute of the model's schema; repeatable.")
@click.option("--only-region", default=None, metavar="REGION",
              help="Confine the edits to a region: 'sleeves' or attribute=value "
                   "(that manipulation's attention above 0.9).")
@click.option("--out", required=True, type=click.Path(file_okay=False), callback=writable_dir,
              help="Folder for <stem>_edit.png and <stem>_mask.png (inputs sharing a stem: "
                   "<stem>-2_edit.png, ...). Existing PNGs of those names that edit wrote are "
                   "replaced; nothing else in the folder is touched.")
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory (default: the shipped model of --method).")
@click.option("--method", type=click.Choice(["amgan", "stargan"]), default="amgan",
              show_default=True, help="Which shipped model, when --model is not given.")
@device_option(help="torch device.", default="cpu", show_default=True)
def edit(images, sets, only_region, out, model, method, device, attribute_flags) -> None:
    """Edit images toward attributes: writes DIR/<stem>_edit.png and DIR/<stem>_mask.png."""
    from amgan_search.editors import edit_files, edit_outputs
    from amgan_search.registry import load_model, model_config, shipped_model
    from amgan_search.schema import Schema

    targets = {**attribute_flags,
               **parse_pairs(sets, "--set", error="{flag} {pair!r}: expected attribute=value")}
    # Check the targets against the model's schema before loading any weights.
    path = Path(model) if model else shipped_model(method)
    schema = Schema.from_dict(model_config(path, "editor").get("schema") or {})
    schema.targets(targets)
    if not targets:
        raise UserError("no target given; options for this model: "
                        + ", ".join(f"--{n}" for n in schema.names))
    edit_outputs(images, out)  # refuse a file in the way before loading any weights
    manipulator = load_model(path, "editor", device=device)
    for src, edited in edit_files(manipulator, images, out, targets, only_region=only_region):
        click.echo(f"{src} -> {edited}")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--classifier", "which", default="eval", show_default=True,
              help="A classifier directory, or cam / eval for the shipped ones.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON list of {path, attributes: {name: {value, probability}}}.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
def classify(images, which, as_json, batch_size) -> None:
    """Predict each attribute of IMAGES with its probability."""
    from amgan_search.nets.classifier import classify_images

    results = classify_images(load_classifier_option(which), images, batch_size)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        parts = ", ".join(f"{name}={v['value']} ({v['probability']:.2f})"
                          for name, v in r["attributes"].items())
        click.echo(f"{r['path']}: {parts}")
