"""`index build|add|info`, `query` and `benchmark`: thin wrappers over index.store and evaluate."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from amgan_search.errors import UserError

# Options of `query` itself; an attribute with one of these names is set with --set NAME=VALUE.
_QUERY_OPTIONS = {"k", "index", "model", "json", "out", "where", "no-edit", "only-region", "set",
                  "device", "help", "h"}


# ---------------------------------------------------------------- index

@click.group()
def index() -> None:
    """Build, extend and inspect catalog indexes (FAISS over the CAM classifier's embeddings)."""


def _init_distributed():
    """Join the torchrun process group when launched under torchrun; (rank, local device)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    device = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), device


@index.command("build")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Catalog DB to index.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Index folder to write (replaced atomically).")
@click.option("--embedder", type=click.Path(file_okay=False), default=None,
              help="CAM classifier folder that embeds the images [default: the shipped classifier-cam].")
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]), default="auto",
              show_default=True, help="auto: flat below 50k items, ivf above, ivfpq when the memory budget binds.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True, help="Images per forward pass.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="DataLoader processes decoding images.")
@click.option("--memory-budget-mb", type=click.FloatRange(min=1), default=None,
              help="Memory the index may use; float32 vectors over it switch auto to IVF-PQ.")
@click.option("--device", default=None, help="torch device for the embedder [default: cuda if present, else cpu].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(db, out, embedder, index_type, batch_size, workers, memory_budget_mb, device, quiet) -> None:
    """Embed every catalog image and write a FAISS index with its metadata (torchrun: sharded)."""
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.store import build_index, describe

    rank, dist_device = _init_distributed()
    emb = load_embedder(embedder, device=device or dist_device)
    info = build_index(db, out, emb, index_type=index_type, batch_size=batch_size, workers=workers,
                       memory_budget_mb=memory_budget_mb, progress=not quiet)
    if rank == 0 and info is not None:
        click.echo(f"wrote {out}")
        click.echo(describe(info))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


@index.command("add")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index folder to extend.")
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Catalog DB holding the new items.")
@click.option("--ids", multiple=True, help="Only these item ids (repeat or comma-separate) [default: every item not yet indexed].")
@click.option("--embedder", type=click.Path(file_okay=False), default=None,
              help="Embedder folder; must be the one the index was built with [default: that one].")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def add(index_dir, db, ids, embedder, batch_size, workers, device, quiet) -> None:
    """Add catalog items that are not in the index yet, without a rebuild."""
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.store import add_items, check_embedder, load_info

    info = load_info(index_dir)
    emb = load_embedder(embedder if embedder is not None else info["embedder"].get("path"), device=device)
    check_embedder(info, emb, index_dir)
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
    from amgan_search.index.store import describe, load_info, read_faiss

    meta = load_info(index_dir)
    read_faiss(index_dir)  # a corrupt index file should show here, not at the first query
    click.echo(json.dumps(meta, indent=2) if as_json else describe(meta))


# ---------------------------------------------------------------- query

def _schema_of_index(path: Path) -> dict | None:
    try:
        return json.loads((path / "index.json").read_text()).get("schema")
    except (OSError, ValueError, AttributeError):
        return None


def _index_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--index" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--index="):
            return a.split("=", 1)[1]
    return None


def known_attributes(index_dir: str | None = None) -> dict[str, list[str]]:
    """Attributes `query` offers flags for: the given index's, the default index's, the synthetic ones."""
    from amgan_search.index.store import default_index_dir
    from amgan_search.schema import SYNTHETIC_ATTRIBUTES

    found: dict[str, list[str]] = {}
    for source in (Path(index_dir) if index_dir else None, default_index_dir()):
        schema = _schema_of_index(source) if source is not None else None
        for name, values in (schema or {}).items():
            found.setdefault(name, list(values))
    for name, values in SYNTHETIC_ATTRIBUTES.items():
        found.setdefault(name, list(values))
    return found


def _flag(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class QueryCommand(click.Command):
    """`query` with one --ATTRIBUTE option per attribute of the index's schema (built at parse time)."""

    def _attribute_options(self, index_dir: str | None) -> None:
        self.params = [p for p in self.params if not getattr(p, "is_attribute", False)]
        for name, values in known_attributes(index_dir).items():
            flag = _flag(name)
            if not flag or flag in _QUERY_OPTIONS:
                continue
            option = click.Option([f"--{flag}", f"attr__{flag.replace('-', '_')}"], metavar="VALUE",
                                  default=None, help=f"Target {name}: " + ", ".join(values) + ".")
            option.is_attribute = True
            option.attribute = name
            self.params.append(option)

    def parse_args(self, ctx, args):
        self._attribute_options(_index_arg(args))
        return super().parse_args(ctx, args)


def _parse_pairs(pairs, flag: str) -> dict[str, str]:
    out = {}
    for p in pairs:
        if "=" not in p or not p.split("=", 1)[0].strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {p!r}", param_hint=flag)
        key, value = p.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@click.command(cls=QueryCommand)
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Results to return.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None,
              help="Index folder [default: the demo's, $AMGAN_SEARCH_HOME/index/default].")
@click.option("--model", type=click.Path(file_okay=False), default=None,
              help="Manipulator folder (AMGAN or a baseline) [default: the shipped AMGAN].")
@click.option("--set", "set_pairs", multiple=True, metavar="ATTR=VALUE",
              help="Target value for any attribute of the index (also those without their own flag).")
@click.option("--where", "where_pairs", multiple=True, metavar="KEY=VALUE",
              help="Keep only results whose metadata has this value (e.g. gender=female); repeatable.")
@click.option("--no-edit", is_flag=True, help="Search with the image as it is.")
@click.option("--only-region", default=None, metavar="ATTR=VALUE",
              help="Confine the edit to the region of another manipulation (e.g. sleeve=sleeveless: sleeves only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {targets, edited, results}.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for the edited image, its mask and a contact sheet PNG.")
@click.option("--device", default=None, help="torch device [default: cuda if present, else cpu].")
@click.pass_context
def query(ctx, image, k, index_dir, model, set_pairs, where_pairs, no_edit, only_region, as_json, out,
          device, **attr_flags) -> None:
    """Edit IMAGE toward the given attributes (e.g. --color red --sleeve long) and search the catalog."""
    from amgan_search.index.store import default_index_dir

    where = _parse_pairs(where_pairs, "--where")
    flags = {opt.attribute: attr_flags.get(opt.name) for opt in ctx.command.params
             if getattr(opt, "is_attribute", False)}
    targets = {name: value for name, value in flags.items() if value is not None}
    targets.update(_parse_pairs(set_pairs, "--set"))
    if index_dir is None:
        index_dir = default_index_dir()
        if not (Path(index_dir) / "index.json").is_file():
            raise UserError(f"{index_dir}: no default index; run `amgan-search demo` or "
                            "`amgan-search index build --db CATALOG.db --out DIR` and pass --index DIR")
    from amgan_search.images import load_image
    from amgan_search.index.store import Retriever

    if not targets and not no_edit:
        click.echo("no target attribute given: searching with the image as it is", err=True)
    picture = load_image(image)
    retriever = Retriever(index_dir, model=model, device=device)
    result = retriever.query(picture, targets, k=k, where=where, edit=not no_edit,
                             only_region=only_region)
    edited_path = None
    if out is not None:
        edited_path = retriever.save(result, out)
    if as_json:
        click.echo(json.dumps({"targets": result.targets, "edited": edited_path,
                               "results": result.results}, indent=2))
        return
    click.echo(_table(result, edited_path))


def _table(result, edited_path) -> str:
    """Results as an aligned text table: rank, id, score, attributes, path."""
    head = ("targets: " + (", ".join(f"{a}={v}" for a, v in result.targets.items()) or "none (unedited)"))
    rows = [("rank", "id", "score", "attributes", "path")]
    for r in result.results:
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


# ---------------------------------------------------------------- benchmark

@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False), help="Catalog DB whose test split gives the queries.")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index of the gallery (the catalog).")
@click.option("--methods", default="real,amgan,stargan", show_default=True,
              help="Comma-separated: real, oracle (synthetic catalogs), amgan, stargan, a model folder, NAME=DIR.")
@click.option("--k", "ks", default="1,5,10,20,30,50", show_default=True, help="Comma-separated k of the top-k curve.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for queries.jsonl, summary.json, summary.md, topk.png; a rerun resumes there.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N test images.")
@click.option("--eval-classifier", default="eval", show_default=True,
              help="Evaluation classifier folder, or 'eval' for the shipped one, or 'none' to skip.")
@click.option("--split", default="test", show_default=True, help="Split whose images are the queries.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(db, index_dir, methods, ks, out, limit, eval_classifier, split, batch_size, workers,
              device, quiet) -> None:
    """The paper's metrics: edit classification accuracy and top-k retrieval accuracy per method."""
    from amgan_search.evaluate import (BenchmarkConfig, parse_ks, parse_methods, run_benchmark,
                                       summary_markdown)

    config = BenchmarkConfig(
        db=db, index=index_dir, out=out, methods=parse_methods(methods), ks=parse_ks(ks), limit=limit,
        eval_classifier=None if eval_classifier.lower() == "none" else eval_classifier, split=split,
        batch_size=batch_size, workers=workers, device=device, progress=not quiet)
    summary = run_benchmark(config)
    click.echo(summary_markdown(summary))
    click.echo(f"wrote {out}/queries.jsonl, summary.json, summary.md, topk.png")
