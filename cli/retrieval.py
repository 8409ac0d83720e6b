"""`index build|add|info` and `query`: thin wrappers over amgan_search.index."""

from __future__ import annotations

import json
from pathlib import Path

import click

from amgan_search.cli.options import (AttributeCommand, device_option, offered_attributes,
                                      option_value, parse_pairs, schema_in, writable_dir)
from amgan_search.errors import UserError

# ---------------------------------------------------------------- index

@click.group()
def index() -> None:
    """Build, extend and inspect catalog indexes (FAISS over the CAM classifier's embeddings)."""


@index.command("build")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Catalog DB to index.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Index folder to write: new or empty, or an index with --force.")
@click.option("--embedder", type=click.Path(file_okay=False), default=None,
              help="CAM classifier folder that embeds the images [default: the shipped classifier-cam].")
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]), default="auto",
              show_default=True,
              help="auto: flat below 50k items, ivf above, ivfpq when the memory budget binds.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
              help="DataLoader processes decoding images.")
@click.option("--memory-budget-mb", type=click.FloatRange(min=1), default=None,
              help="Memory the index may use; float32 vectors over it switch auto to IVF-PQ.")
@device_option("torch device for the embedder [default: cuda if present, else cpu].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--force", is_flag=True,
              help="Replace the index at --out (readers keep the old one until the new one is complete).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch threads per process [default: OMP_NUM_THREADS if set, else the cores left "
                   "after --workers].")
def build(db, out, embedder, index_type, batch_size, workers, memory_budget_mb, device, quiet,
          force, threads=None) -> None:
    """Embed every catalog image and write a FAISS index with its metadata (torchrun: sharded)."""
    from amgan_search.device import set_torch_threads
    from amgan_search.index.build import run_build

    set_torch_threads(threads, "build", workers)
    from amgan_search.index.index_dir import describe

    info = run_build(db, out, embedder, device, index_type=index_type, batch_size=batch_size,
                     workers=workers, memory_budget_mb=memory_budget_mb, progress=not quiet,
                     force=force)
    if info is not None:  # rank 0 only under torchrun
        click.echo(f"wrote {out}")
        click.echo(describe(info))


@index.command("add")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder to extend.")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Catalog DB holding the new items.")
@click.option("--ids", multiple=True,
              help="Only these item ids (repeat or comma-separate) [default: every item not yet indexed].")
@click.option("--embedder", type=click.Path(file_okay=False), default=None,
              help="Embedder folder; must be the one the index was built with [default: that one].")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@device_option(help=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def add(index_dir, db, ids, embedder, batch_size, workers, device, quiet) -> None:
    """Add catalog items that are not in the index yet, without a rebuild."""
    from amgan_search.index.build import add_items
    from amgan_search.index.embed import index_embedder

    emb = index_embedder(index_dir, embedder, device=device)
    wanted = [i for chunk in ids for i in chunk.split(",") if i] or None
    n = add_items(index_dir, db, emb, ids=wanted, batch_size=batch_size, workers=workers,
                  progress=not quiet)
    click.echo(f"added {n} item{'s' if n != 1 else ''} to {index_dir}" if n else
               f"nothing to add: every item is already in {index_dir}")


@index.command("info")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print index.json as it is.")
def info(index_dir, as_json) -> None:
    """Summarise an index: type, size, embedder, schema, recall against exact search."""
    from amgan_search.index.index_dir import describe, load_info, read_faiss

    meta = load_info(index_dir)
    read_faiss(index_dir)  # a corrupt index file should show here, not at the first query
    click.echo(json.dumps(meta, indent=2) if as_json else describe(meta))


# ---------------------------------------------------------------- query

def query_attributes(args) -> dict[str, list[str]]:
    """Attributes `query` offers flags for: the given index's, the default index's, the synthetic ones."""
    from amgan_search.index.index_dir import INFO, default_index_dir

    given = option_value(args, "--index")
    return offered_attributes(server_schema(option_value(args, "--server")),
                              schema_in(Path(given) / INFO if given else None),
                              schema_in(default_index_dir() / INFO))


def server_schema(url: str | None) -> dict | None:
    """The attributes of a running server (query --server), None when there is none or no answer."""
    if not url:
        return None
    from amgan_search.index.serve.client import Client

    try:
        return Client(url, timeout=5).attributes()
    except UserError:
        return None


@click.command(cls=AttributeCommand, attributes=query_attributes, targets_param="attr_flags")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Results to return.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None,
              help="Index folder [default: the demo's, $AMGAN_SEARCH_HOME/index/default].")
@click.option("--method", default=None, metavar="METHOD",
              help="How the query is answered: amgan, stargan, adde, hybrid, prototype, real, a "
                   "model folder (a GAN or an ADDE embedding) or NAME=GAN+ADDE "
                   "[default: amgan]. With --server: one of the server's methods, by name "
                   "[default: the server's].")
@click.option("--model", type=click.Path(file_okay=False), default=None,
              help="A GAN folder (AMGAN or a baseline) to edit with: the same as --method DIR.")
@click.option("--set", "set_pairs", multiple=True, metavar="ATTR=VALUE",
              help="Target value for any attribute of the index (also those without their own flag).")
@click.option("--where", "where_pairs", multiple=True, metavar="KEY=VALUE",
              help="Keep only results whose metadata has this value (e.g. gender=female); repeatable.")
@click.option("--no-edit", is_flag=True, help="Search with the image as it is.")
@click.option("--only-region", default=None, metavar="ATTR=VALUE",
              help="Confine the edit to the region of another manipulation (e.g. sleeve=sleeveless: sleeves only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {targets, edited, results}.")
@click.option("--out", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="Folder for edited.png, mask.png and contact.png (existing PNGs of those "
                   "names that query wrote are replaced; nothing else in the folder is touched).")
@click.option("--server", default=None, metavar="URL",
              help="Send the query to a running `amgan-search serve` (e.g. http://127.0.0.1:8000) "
                   "instead of loading the models here.")
@device_option()
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 where the CPU or GPU has it natively, else fp32; fp32: the exact fp32 networks.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch threads [default: OMP_NUM_THREADS if set, else half the cores, at most 4].")
def query(image, k, index_dir, method, model, set_pairs, where_pairs, no_edit, only_region,
          as_json, out, server, device, attr_flags, precision="auto", threads=None) -> None:
    """Edit IMAGE toward the given attributes (e.g. --color red --sleeve long) and search the catalog."""
    where = parse_pairs(where_pairs, "--where")
    targets = {**attr_flags, **parse_pairs(set_pairs, "--set")}
    if server is not None:
        return _query_server(server, image, targets, k, where, only_region, no_edit, as_json, out,
                             model or device or threads or precision != "auto", method)
    from amgan_search.device import set_torch_threads
    from amgan_search.images import load_image
    from amgan_search.index.index_dir import default_or_given
    from amgan_search.index.retrieve import Retriever

    index_dir = default_or_given(index_dir)
    if not targets and not no_edit:
        click.echo("no target attribute given: searching with the image as it is", err=True)
    picture = load_image(image)
    set_torch_threads(threads, "query")
    if method is not None and model is not None:
        raise click.UsageError("--method and --model both name the method; give one")
    retriever = Retriever(index_dir, model=model, device=device, precision=precision,
                          method=method, progress=not as_json)
    result = retriever.query(picture, targets, k=k, where=where, edit=not no_edit,
                             only_region=only_region)
    edited_path = retriever.save(result, out, inputs=[image]) if out is not None else None
    _print(result.targets, [hit.as_dict() for hit in result.results], edited_path, as_json,
           method=result.method)


def _query_server(url, image, targets, k, where, only_region, no_edit, as_json, out,
                  local_models, method=None) -> None:
    """query --server: the same output as a local query, from a running server (no torch here);
    --method names one of the server's methods (`GET /api/schema` lists them)."""
    from amgan_search.index.serve.client import Client, local_shape, save_answer

    if local_models:
        raise click.UsageError("--model, --device, --precision and --threads are the server's "
                               "(amgan-search serve); drop them with --server (--method names "
                               "one of the server's methods)")
    if not targets and not no_edit:
        click.echo("no target attribute given: searching with the image as it is", err=True)
    if no_edit:
        targets, only_region = {}, None
    client = Client(url)
    answer = client.query(image, targets, k=k, where=where, only_region=only_region,
                          method=method)
    edited_path = None
    if out is not None:
        from amgan_search.images import load_image

        edited_path = save_answer(client, answer, load_image(image), out, inputs=[image])
    _print(answer.get("targets", {}), local_shape(answer), edited_path, as_json,
           method=answer["method"])


def _print(targets: dict, results: list[dict], edited_path: str | None, as_json: bool,
           method: str) -> None:
    """A query's answer, local or the server's: one JSON object {method, targets, edited,
    results}, or the table."""
    if as_json:
        click.echo(json.dumps({"method": method, "targets": targets, "edited": edited_path,
                               "results": results}, indent=2))
    else:
        click.echo(_table(targets, results, edited_path))


def _table(targets: dict, results: list[dict], edited_path) -> str:
    """Results as an aligned text table: rank, id, score, attributes, path."""
    head = ("targets: " + (", ".join(f"{a}={v}" for a, v in targets.items()) or "none (unedited)"))
    rows = [("rank", "id", "score", "attributes", "path")]
    for r in results:
        rows.append((str(r["rank"]), str(r["id"]), f"{r['score']:.4f}",
                     " ".join(f"{a}={v}" for a, v in r["attributes"].items()), str(r["path"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [head]
    if edited_path:
        lines.append(f"edited image: {edited_path}")
    if len(rows) == 1:
        lines.append("no results (the --where filter matched nothing?)")
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    return "\n".join(lines)
