"""`amgan-search compare`: the paper's whole comparison as one command
(index/evaluate/compare/run.py)."""

from __future__ import annotations

import click

from amgan_search.cli.options import (SEED, WORKERS, attribute_list, check_own_folder,
                                      device_option, writable_dir)
from amgan_search.index.evaluate.compare.models import COMPARED, PICKS


@click.command()
@click.option("--train-db", required=True, type=click.Path(dir_okay=False),
              help="Catalog DB every method and the CNN+CAM classifier train on (give it as the "
                   "runs were started with: a resumed classifier run checks it).")
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="Evaluation catalog DB: its test split gives the queries.")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="Index of the gallery.")
@click.option("--runs", default="runs/compare", show_default=True, type=click.Path(file_okay=False),
              help="Training runs: RUNS/<method>, RUNS/cls-cam, RUNS/classifier-cam and the "
                   "exported models in RUNS/models/<method>-<step>.")
@click.option("--out", default="docs/results/comparison", show_default=True,
              type=click.Path(file_okay=False), callback=writable_dir,
              help="comparison.md, comparison.json, comparison.png, the benchmark and the edit "
                   "records; a rerun resumes there.")
@click.option("--methods", default=",".join(COMPARED), show_default=True,
              help="Comma-separated methods; real and oracle are always added.")
@click.option("--also", default="", metavar="SPEC",
              help="Methods benchmarked beside them as they are, no training and no edit "
                   "grading: prototype, adde, hybrid, NAME=DIR, NAME=GAN+ADDE (benchmark's "
                   "--methods forms).")
@click.option("--iters", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Iterations every run is planned for (its learning-rate schedule).")
@click.option("--step", type=click.IntRange(min=1), default=None,
              help="The iteration to evaluate every method at, trained to first where not yet "
                   "reached [default: the largest every run has].")
@click.option("--checkpoint", "pick", type=click.Choice(PICKS), default="step", show_default=True,
              help="Each run's checkpoint: the one at --step, or the best by the truth's "
                   "validation (train amgan --val-scenes) at or before it.")
@click.option("--no-train", is_flag=True,
              help="Only evaluate what exists; refuse when a method lacks the step.")
@click.option("--graders", default="", show_default=False,
              help="CNN graders beside cam=RUNS/classifier-cam: NAME=DIR, comma-separated "
                   "(a cam=DIR of yours replaces it).")
@click.option("--sample", type=click.IntRange(min=1), default=500, show_default=True,
              help="Benchmark queries: a random sample of this many test images.")
@click.option("--sample-seed", type=SEED, default=0, show_default=True)
# evaluate_edits holds every scene in memory at once (cli/evaluate.py: about 92 bytes a pixel):
# 10,000 scenes at 64x64 are about 4 GB.
@click.option("--edit-scenes", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Synthetic scenes each generator's edits are graded on.")
@click.option("--edit-seed", type=SEED, default=777, show_default=True)
@click.option("--scene-attributes", default="color,sleeve,pattern,neckline", show_default=True,
              help="Attributes the edit scenes are drawn with.")
@click.option("--workers", type=WORKERS, default=0, show_default=True,
              help="The benchmark's DataLoader workers.")
@device_option()
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare(train_db, db, index_dir, runs, out, methods, also, iters, step, pick, no_train, graders,
            sample, sample_seed, edit_scenes, edit_seed, scene_attributes, workers, device,
            quiet) -> None:
    """Train (resume) every method to one iteration, benchmark them between real (the floor) and
    oracle (the ceiling), grade their edits, and write comparison.md/.json/.png, every number
    with a 95% interval over queries."""
    from amgan_search.index.evaluate.compare.models import OWN_NAMES, CompareConfig
    from amgan_search.index.evaluate.compare.run import run_comparison
    from amgan_search.index.evaluate.table import comparison_markdown

    check_own_folder(out, OWN_NAMES)
    config = CompareConfig(
        train_db=train_db, db=db, index=index_dir, runs=runs, out=out, methods=_names(methods),
        also=also, iters=iters, step=step, pick=pick, train=not no_train, graders=graders, sample=sample,
        sample_seed=sample_seed, edit_scenes=edit_scenes, edit_seed=edit_seed,
        scene_attributes=attribute_list(scene_attributes, "--scene-attributes",
                                        "color,sleeve,pattern,neckline"), workers=workers, device=device,
        progress=not quiet)
    table = run_comparison(config, log=lambda line: click.echo(line, err=True))
    click.echo(comparison_markdown(table))


def _names(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]
