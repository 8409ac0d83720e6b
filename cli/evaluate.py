"""`amgan-search evaluate-classifier`, `evaluate-edits` and `benchmark`: the metrics, from the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from amgan_search.cli.options import (SEED, WORKERS, attribute_list, check_own_folder,
                                      device_option, graders_options, graders_value,
                                      load_classifier_option, writable_dir, writable_file)
from amgan_search.errors import UserError

# evaluate_edits holds every scene at once: its render (3 bytes a pixel), six masks (6) and the
# float32 tensor of the renders (12), measured with tracemalloc and tensor sizes at 200 x 64x64;
# and the truth grader's references with the softened renders of one edit's two colors (71,
# tracemalloc at 50 x 64x64).
EDIT_BYTES_PER_PIXEL = 92
# The largest top-k a benchmark searches to, as `query -k`.
MAX_K = 10_000


@click.command()
@click.option("--classifier", "which", default="cam", show_default=True,
              help="A classifier directory, or cam / eval for the shipped ones.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Catalog DB whose split to score (e.g. a catalog rendered from an unseen seed).")
@click.option("--split", default="test", show_default=True, help="Split of --db to score.")
@click.option("--cam-scenes", type=click.IntRange(min=0), default=200, show_default=True,
              help="Synthetic scenes for the CAM IoU against the true masks (0: skip).")
@click.option("--seed", type=SEED, default=777, show_default=True, help="Seed of those scenes.")
@click.option("--cam-sheet", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="Also draw a PNG: scenes and the CAM of their own value of each attribute "
                   "(replaces only a PNG this command wrote).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_classifier(which, db, split, cam_scenes, seed, cam_sheet, as_json) -> None:
    """Accuracy per attribute on a catalog split, and CAM IoU against the synthetic truth."""
    from amgan_search.metrics.cam import cam_iou
    from amgan_search.metrics.intervals import wilson

    if cam_sheet:
        from amgan_search.metrics.cam import CAM_SHEET
        from amgan_search.outputs import claim_pngs

        claim_pngs([Path(cam_sheet)], CAM_SHEET)
    if db:
        _check_split(db, split)
    model = load_classifier_option(which)
    report = {"classifier": which, "role": model.role, "arch": model.config.get("arch")}
    if db:
        from amgan_search.dataset import CatalogImages
        from amgan_search.train.classifier import evaluate_classifier as score
        from amgan_search.train.classifier_data import top_confusions

        report["accuracy"] = score(model, CatalogImages(db, split=split, size=model.size))
        report["accuracy"].update(db=str(db), split=split, interval={
            name: list(wilson(*counts)[1:]) for name, counts in report["accuracy"]["counts"].items()})
    if cam_scenes:
        report["cam_iou"] = cam_iou(model, n=cam_scenes, seed=seed)
    if cam_sheet:
        from amgan_search.metrics.cam import cam_sheet as draw

        draw(model, cam_sheet, seed=seed)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"classifier {which} ({report['role']}, {report['arch']})")
    if "accuracy" in report:
        acc = report["accuracy"]
        click.echo(f"accuracy on {db} [{split}], {acc['n']} items (95% Wilson interval): " + ", ".join(
            f"{k} {v:.4f} [{acc['interval'][k][0]:.4f}, {acc['interval'][k][1]:.4f}]"
            for k, v in acc["accuracy"].items() if v is not None))
        for attribute in model.schema.attributes:
            misread = top_confusions(acc["confusion"][attribute.name], attribute.values)
            click.echo(f"  {attribute.name}, commonest misreadings: {misread}")
    for name, r in report.get("cam_iou", {}).items():
        click.echo(f"CAM IoU {name} vs {r['region']}: {r['mean_iou']:.3f} ({r['n']} scenes)")


@click.command()
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory (default: the shipped model of --method).")
@click.option("--method", type=click.Choice(["amgan", "stargan"]), default="amgan",
              show_default=True, help="Which shipped model, when --model is not given.")
@graders_options
@click.option("--scene-attributes", default=None,
              help="Attributes the test scenes are drawn with, comma-separated, the model's among "
                   "them (color,sleeve,pattern,neckline: the harder setting's scenes); edits stay "
                   "over the model's.  [default: the model's]")
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="Test scenes (held in memory at once: about 92 bytes a pixel).")
@click.option("--seed", type=SEED, default=777, show_default=True, help="Test scenes' seed.")
@click.option("--size", type=click.IntRange(16, 1024), default=None,
              help="Render size; the model's output is scaled back to it.  [default: 64]")
@click.option("--at-size", type=click.IntRange(16, 1024), default=None,
              help="Grade at the catalog's resolution instead: scenes rendered at this size, the "
                   "model's edit composed into the full photo as a query's is.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), callback=writable_file,
              help="Also write the markdown table here (replaces only a table this command wrote).")
@click.option("--records", default=None, type=click.Path(dir_okay=False), callback=writable_file,
              help="Also write one JSON line per edit here (replaces only records this command "
                   "wrote).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as JSON instead of the table (records: --records).")
@click.option("--grid", default=None, type=click.Path(dir_okay=False), callback=writable_file,
              help="Also draw a PNG of six of the scenes: input, then per target the true edit, "
                   "the model's edit and its attention mask (replaces only a PNG this command "
                   "wrote).")
@device_option(help="torch device.", default="cpu", show_default=True)
def evaluate_edits(model, method, graders, eval_classifier, scene_attributes, n, seed, size,
                   at_size, out, records, as_json, grid, device) -> None:
    """Grade edits against the synthetic renderer's truth: accuracy (each CNN grader and the
    grader that is no network), fidelity, preservation, IoU; one record per edit."""
    from amgan_search.io import JsonlWriter, atomic_path, write_text
    from amgan_search.metrics.edits import evaluate_edits as run
    from amgan_search.metrics.edits import is_records_file, markdown_table, scene_schema
    from amgan_search.outputs import claim_file, claim_pngs
    from amgan_search.registry import load_graders, load_model, parse_graders, shipped_model

    graders = graders_value(graders, eval_classifier)
    _flag("--graders", parse_graders, graders)  # a bad spec is refused before any loading
    if size is not None and at_size is not None and size != at_size:
        raise UserError(f"--size {size} and --at-size {at_size} name two render sizes; give one")
    size = at_size or size or 64
    names = attribute_list(scene_attributes, "--scene-attributes", "color,sleeve,pattern")
    _check_memory(n, size)
    given = [(flag, Path(p).resolve()) for flag, p in
             (("--out", out), ("--grid", grid), ("--records", records)) if p]
    for k, (flag, path) in enumerate(given):
        twin = next((f for f, q in given[k + 1:] if q == path), None)
        if twin:
            raise UserError(f"{path}: given as both {flag} and {twin}; name two files")
    if out:
        claim_file(out, _is_edit_table, "table written by evaluate-edits")
    if records:
        claim_file(records, is_records_file, "records file written by evaluate-edits")
    if grid:
        claim_pngs([Path(grid)], "evaluate-edits")
    manipulator = load_model(model or shipped_model(method), "editor", device)
    _flag("--scene-attributes", lambda v: scene_schema(manipulator.schema, v), names)
    results = run(manipulator, load_graders(graders, device), n=n, seed=seed, size=size,
                  scene_attributes=names, at_size=at_size)
    summary = {k: v for k, v in results.items() if k != "records"}
    table = markdown_table(summary)
    if out:
        write_text(out, table)
    if records:
        with atomic_path(records) as tmp, JsonlWriter(tmp, compact=True) as writer:
            writer.write(results["records"])
    if grid:
        from amgan_search.images import save_image
        from amgan_search.metrics.edits import edit_grid

        save_image(grid, edit_grid(manipulator, n=min(n, 6), seed=seed, size=size,
                                   scene_attributes=names, at_size=at_size),
                   made_by="evaluate-edits")
    click.echo(json.dumps(summary, indent=2) if as_json else table)


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="Catalog DB whose test split gives the queries.")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="Index of the gallery (the catalog).")
@click.option("--methods", default="real,amgan,stargan", show_default=True,
              help="Comma-separated: real, oracle (synthetic catalogs), amgan, stargan, prototype, adde, "
                   "hybrid (amgan's edit searched by adde), a model folder, NAME=DIR, NAME=GAN+ADDE "
                   "(a hybrid of two model folders or names).")
@click.option("--k", "ks", default="1,5,10,20,30,50", show_default=True, help="Comma-separated k of the top-k curve.")
@click.option("--out", required=True, type=click.Path(file_okay=False), callback=writable_dir,
              help="Folder for queries.jsonl, summary.json, summary.md, topk.png; a rerun "
                   "resumes there. A folder holding other files is refused.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N test images.")
@click.option("--sample", type=click.IntRange(1), default=None,
              help="Instead of --limit: a random sample of N test images, drawn with --sample-seed "
                   "(the paper and ADDE: 2,000).")
@click.option("--sample-seed", type=SEED, default=0, show_default=True, help="Seed of --sample.")
@click.option("--gallery", type=click.Choice(["all", "test"]), default="all", show_default=True,
              help="Items searched: all = the whole catalog (train and test); test = only the test "
                   "split (ADDE's protocol).")
@click.option("--missing", type=click.Choice(["wildcard", "value"]), default="wildcard",
              show_default=True,
              help="A missing label in a target vector: wildcard = matches any value; value = a value "
                   "of its own that only a missing label matches (ADDE's protocol).")
@click.option("--own", type=click.Choice(["exclude", "keep"]), default="exclude", show_default=True,
              help="The query's own item: exclude = left out of the gallery; keep = searched like "
                   "any other item (ADDE's protocol).")
@graders_options
@click.option("--edit-attributes", default=None,
              help="Attributes the queries change, comma-separated (the harder setting: "
                   "color,sleeve of an index of color,sleeve,pattern,neckline); a hit still needs "
                   "every attribute of the target.  [default: every attribute of the index]")
@click.option("--split", default="test", show_default=True, help="Split whose images are the queries.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=WORKERS, default=2, show_default=True)
@device_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def benchmark(db, index_dir, methods, ks, out, limit, sample, sample_seed, gallery, missing, own,
              graders, eval_classifier, edit_attributes, split, batch_size, workers, device,
              quiet) -> None:
    """The paper's metrics: accuracy of the edits per grader, top-k retrieval accuracy, NDCG@k
    and MRR per method. A model of fewer attributes than the index edits those it has. The
    protocol's choices and the graders are recorded in run.json; a rerun resumes only the same."""
    from amgan_search.index.evaluate.benchmark import (QUERIES, RUN_JSON, BenchmarkConfig,
                                                       grader_sources, run_benchmark)
    from amgan_search.index.methods import parse_methods
    from amgan_search.index.evaluate.report import (SUMMARY_JSON, SUMMARY_MD, TOPK_PNG,
                                                    summary_markdown)
    from amgan_search.io import packed

    if sample is not None and limit is not None:
        raise UserError("--sample replaces --limit; give one of them")
    graders = graders_value(graders, eval_classifier)
    _flag("--graders", grader_sources, graders)  # a bad spec is refused before any work
    edit_attributes = attribute_list(edit_attributes, "--edit-attributes")
    check_own_folder(out, (QUERIES, packed(QUERIES).name, RUN_JSON, SUMMARY_JSON, SUMMARY_MD,
                           TOPK_PNG))
    config = BenchmarkConfig(
        db=db, index=index_dir, out=out, methods=_flag("--methods", parse_methods, methods),
        ks=_flag("--k", _ks, ks), limit=limit, graders=graders, split=split,
        batch_size=batch_size, workers=workers, device=device, progress=not quiet,
        gallery=gallery, sample=sample, sample_seed=sample_seed, missing=missing, own=own,
        edit_attributes=edit_attributes)
    summary = run_benchmark(config)
    click.echo(summary_markdown(summary))
    click.echo(f"wrote {out}/queries.jsonl, summary.json, summary.md, topk.png")


def _flag(flag: str, parse, value):
    """parse(value), its UserError prefixed with the flag the value came from."""

    try:
        return parse(value)
    except UserError as exc:
        raise UserError(f"{flag}: {exc}") from None


def _ks(spec: str) -> list[int]:
    """--k: parse_ks, and no k beyond what a query may ask for (a huge k allocates k results)."""
    from amgan_search.metrics.retrieval import parse_ks

    ks = parse_ks(spec)
    if ks[-1] > MAX_K:
        raise UserError(f"values must be at most {MAX_K:,}, got {ks[-1]}")
    return ks


def _check_split(db: str, split: str) -> None:
    """A split with no items would score nothing and print an empty accuracy: refuse it."""
    from amgan_search.catalog import Catalog

    catalog = Catalog.open(db)
    if catalog.count(split) == 0:
        raise UserError(f"{db}: no items in split {split!r} (splits: "
                        f"{', '.join(catalog.splits()) or 'none'})")


def _check_memory(n: int, size: int) -> None:
    """Refuse --n and --size whose scenes would not fit in half this machine's memory."""

    need = n * size * size * EDIT_BYTES_PER_PIXEL
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: let the run find out
        return
    if need > total // 2:
        raise UserError(f"--n {n} scenes at --size {size} hold about {need / 2**30:.1f} GiB in "
                        f"memory, over half of this machine's {total / 2**30:.0f} GiB; "
                        "lower --n or --size")


def _is_edit_table(path) -> bool:
    """Whether `path` holds a table evaluate-edits wrote (markdown_table's first words)."""
    with open(path, "rb") as f:
        return f.read(17) == b"Edit quality of `"
