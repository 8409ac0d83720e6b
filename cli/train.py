"""`amgan-search train classifier|amgan|adde|export` and `model checksum`: parse, call the
trainers, print."""

from __future__ import annotations

import os
from contextlib import contextmanager

import click

from amgan_search.errors import UserError
from amgan_search.nets import UPSAMPLE, UPSAMPLINGS  # names only: no torch

# Presets and synthetic attribute names are repeated here rather than imported, so that `--help`
# does not import torch; tests check they match the library's.
METHODS = ("amgan", "stargan", "ganimation", "sagan", "no-dc", "no-perceptual",
           "no-attention-loss", "cam-as-mask")
CONDITIONAL_CRITICS = ("none", "dc", "all")  # config.CONDITIONAL_CRITICS
CYCLE_REGIONS = ("all", "kept")  # config.CYCLE_REGIONS
RESTS = ("residual", "trunk", "none")  # nets.adde.RESTS


# The classifier's ResNet depths, repeated for the same reason (nets.classifier.ARCHS).
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")

# The ranges the training configurations check (train.checks), as click types, so a bad number
# is a usage error naming its flag. Repeated for the same reason; tests check they match.
SIZE = click.IntRange(16, 1024)
SEED = click.IntRange(0, 2 ** 32 - 1)
AT_LEAST_ONE = click.IntRange(min=1)
AT_LEAST_ZERO = click.IntRange(min=0)
POSITIVE = click.FloatRange(min=0, min_open=True)
NOT_NEGATIVE = click.FloatRange(min=0)


@contextmanager
def _resume_named():
    """The core's "holds a training run already" with the flag that continues it."""
    from amgan_search.train.loop import RunExists

    try:
        yield
    except RunExists as exc:
        raise UserError(f"{exc.path}: holds a training run already; pass --resume to continue "
                        "it, or choose another --out") from None


@click.command()
@click.option("--db", "db_path", type=click.Path(), required=True, help="Catalog DB to train on.")
@click.option("--out", type=click.Path(), required=True,
              help="Run directory: the best model (config.json + model.safetensors), "
                   "checkpoints/, log.jsonl.")
@click.option("--role", type=click.Choice(["cam", "eval"]), default="cam", show_default=True,
              help="cam: the network AMGAN trains against (CAM, perceptual features, embedder); "
                   "eval: the separate classifier that grades edits.")
@click.option("--arch", type=click.Choice(ARCHS), default=None,
              help="ResNet depth [default: resnet18 for cam, resnet34 for eval].")
@click.option("--size", type=SIZE, default=64, show_default=True, help="Image side in pixels.")
@click.option("--output-stride", type=click.Choice(["8", "16", "32"]), default=None,
              help="Input / last conv map side [default: the largest that leaves a last map of "
                   "at least 8x8 for cam (8 at 64 px), 4x4 for eval (16 at 64 px)].")
@click.option("--epochs", type=AT_LEAST_ONE, default=20, show_default=True)
@click.option("--batch-size", type=AT_LEAST_ONE, default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--lr", type=POSITIVE, default=None,
              help="Peak learning rate [default: 1e-3 adamw, 0.05 sgd].")
@click.option("--weight-decay", type=NOT_NEGATIVE, default=None,
              help="[default: 0.01 adamw, 5e-4 sgd]")
@click.option("--seed", type=SEED, default=None, help="[default: 0 for cam, 1 for eval]")
@click.option("--init", default="scratch", show_default=True,
              help="scratch, imagenet (torchvision weights from the torch hub cache; never "
                   "downloaded), or a classifier directory to start from.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True,
              help="Share of the train split held out to pick the best epoch; 0 validates on "
                   "the test split.")
@click.option("--workers", type=AT_LEAST_ZERO, default=2, show_default=True,
              help="DataLoader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--checkpoint-every", type=AT_LEAST_ONE, default=500, show_default=True,
              help="Steps between resumable checkpoints (one is also written each epoch).")
@click.option("--max-steps", type=AT_LEAST_ONE, default=None,
              help="Stop at this step with a resumable checkpoint (for time-boxed sessions).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_classifier(db_path, output_stride, quiet, **options) -> None:
    """Train the attribute classifier (one head per attribute) on a catalog DB."""
    from amgan_search.train.classifier import ClassifierConfig
    from amgan_search.train.classifier import train_classifier as train
    from amgan_search.train.classifier_data import accuracy_line

    out = options["out"]
    stride = int(output_stride) if output_stride else None
    config = ClassifierConfig(db=db_path, output_stride=stride, progress=not quiet, **options)
    with _resume_named():
        summary = train(config)
    best, test = summary["best"], summary["test"]
    if summary["stopped"]:
        click.echo(f"{out}: stopped at step {summary['step']}; continue with --resume")
        return
    click.echo(f"{out}: best epoch {best.get('epoch')} (validation "
               f"{accuracy_line(best.get('accuracy', {}))}; "
               f"test {accuracy_line(test['accuracy'], none='') if test else '-'})")


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="Catalog DB to train on.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory: checkpoints, samples, log, and the final model.")
@click.option("--method", type=click.Choice(METHODS), default="amgan", show_default=True,
              help="AMGAN, a baseline, or an ablation.")
@click.option("--classifier", type=click.Path(file_okay=False), default=None,
              help="CNN+CAM classifier directory (default: the shipped classifier-cam).")
@click.option("--split", default="train", show_default=True, help="Catalog split to train on.")
# -- schedule
@click.option("--size", type=SIZE, default=64, show_default=True, help="Image size.")
@click.option("--iters", type=AT_LEAST_ONE, default=20000, show_default=True,
              help="Iterations, counted as D updates (G every --n-critic).")
@click.option("--batch-size", type=AT_LEAST_ONE, default=16, show_default=True, help="Per process.")
@click.option("--lr", type=POSITIVE, default=1e-4, show_default=True,
              help="Adam learning rate (decays linearly to 0 over the second half).")
@click.option("--n-critic", type=AT_LEAST_ONE, default=5, show_default=True,
              help="D updates per G update.")
# -- loss weights
@click.option("--lambda-cls", type=NOT_NEGATIVE, default=1.0, show_default=True)
@click.option("--lambda-cyc", type=NOT_NEGATIVE, default=10.0, show_default=True)
@click.option("--lambda-a", type=NOT_NEGATIVE, default=10.0, show_default=True,
              help="Attention loss L_a.")
@click.option("--lambda-p", type=NOT_NEGATIVE, default=20.0, show_default=True,
              help="Perceptual loss L_p (the paper: 10 on Shopping100k).")
@click.option("--lambda-gp", type=NOT_NEGATIVE, default=10.0, show_default=True)
@click.option("--lambda-cls-fake", type=NOT_NEGATIVE, default=0.0, show_default=True,
              help="D's classification head also reads each edit as the photo it came from "
                   "(0: the paper, real images only).")
@click.option("--conditional-critic", type=click.Choice(CONDITIONAL_CRITICS), default="none",
              show_default=True,
              help="Tell the critics the values they judge each image under (a photo its own, "
                   "an edit the target): none (the paper), dc (D_C), all (D_I and D_C).")
@click.option("--cycle-region", type=click.Choice(CYCLE_REGIONS), default="all", show_default=True,
              help="Pixels L_cyc asks back: all (the paper) or kept (weighted by 1 - alpha of "
                   "the forward edit: only what the edit left alone).")
@click.option("--lambda-alpha-binary", type=NOT_NEGATIVE, default=0.0, show_default=True,
              help="Weight of mean(4 alpha (1 - alpha)), pushing alpha to 0 or 1 (0: the paper).")
@click.option("--diff-augment", default=None, metavar="POLICIES",
              help="Random transforms in front of the critics for photos and edits, in both "
                   "updates (DiffAugment), comma-separated: translation, cutout, blur "
                   "[default: none, the paper].")
@click.option("--avgpool-only", is_flag=True,
              help="L_p on avg-pool features only (the paper's Shopping100k setting).")
# -- architecture
@click.option("--g-conv-dim", type=AT_LEAST_ONE, default=32, show_default=True)
@click.option("--g-repeat-num", type=click.IntRange(0, 64), default=3, show_default=True,
              help="Residual blocks in G.")
@click.option("--g-upsample", type=click.Choice(UPSAMPLINGS), default=UPSAMPLE,
              show_default=True,
              help="G's up-sampling: nearest x2 + 3x3 conv, or StarGAN's transposed convolutions.")
@click.option("--d-conv-dim", type=AT_LEAST_ONE, default=32, show_default=True)
@click.option("--d-repeat-num", type=click.IntRange(3, 10), default=5, show_default=True,
              help="Stride-2 layers of D_I (D_C has 2 fewer).")
# -- bookkeeping
@click.option("--sample-every", type=AT_LEAST_ONE, default=1000, show_default=True)
@click.option("--ckpt-every", type=AT_LEAST_ONE, default=1000, show_default=True)
@click.option("--log-every", type=AT_LEAST_ONE, default=50, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--workers", type=AT_LEAST_ZERO, default=0, show_default=True,
              help="DataLoader workers.")
@click.option("--threads", type=AT_LEAST_ONE, default=None,
              help="CPU threads for torch (1 when other jobs share the CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--bf16/--no-bf16", default=None,
              help="bf16 autocast (default: on where the GPU or CPU does bf16 natively).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--augment", is_flag=True, help="Label-preserving flips and shifts.")
@click.option("--resume", is_flag=True, help="Continue from the run directory's latest checkpoint.")
@click.option("--stop-at", type=AT_LEAST_ONE, default=None,
              help="Stop after this iteration with a checkpoint and a model, the schedule still "
                   "planned for --iters (time-boxed sessions; --resume goes on).")
# -- picking checkpoints by the truth (synthetic catalogs)
@click.option("--val-scenes", type=AT_LEAST_ZERO, default=0, show_default=True,
              help="At every checkpoint, grade the edits of this many unseen synthetic scenes "
                   "against the renderer's true edits (no network grades them) and keep the best "
                   "checkpoint as RUN/best; 0: no validation.")
@click.option("--val-scene-attributes", default=None,
              help="Attributes the validation scenes are drawn with, comma-separated, the "
                   "catalog's among them (the harder setting: color,sleeve,pattern,neckline). "
                   "[default: the catalog's]")
def train_amgan(split, avgpool_only, val_scene_attributes, diff_augment, **options) -> None:
    """Train AMGAN or a baseline; works the same under `torchrun --nproc_per_node N`."""
    from amgan_search.cli.options import attribute_list
    from amgan_search.train.amgan import train_amgan as run
    from amgan_search.train.config import AmganConfig

    names = attribute_list(val_scene_attributes, "--val-scene-attributes")
    policies = tuple(p.strip() for p in (diff_augment or "").split(",") if p.strip())
    config = AmganConfig(split=split or None, perceptual_conv5=not avgpool_only,
                         diff_augment=policies,
                         val_scene_attributes=tuple(names) if names else None, **options)
    with _resume_named():
        path = run(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        click.echo(f"model: {path}")


@click.command()
@click.option("--db", required=True, type=click.Path(dir_okay=False),
              help="Catalog DB to train on (its labels: the attributes the chunks learn).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory: the model (config.json + model.safetensors), checkpoints/ "
                   "(one per epoch, all kept), the trunk's features/, log.jsonl.")
@click.option("--encoder", type=click.Path(file_okay=False), default=None,
              help="Classifier folder whose pooled features are the input (frozen; "
                   "`train classifier` makes one) [default: the shipped classifier-cam].")
@click.option("--split", default="train", show_default=True, help="Catalog split to train on.")
@click.option("--attributes", default=None,
              help="Comma-separated labelled attributes to learn chunks for [default: every "
                   "attribute of the DB].")
@click.option("--chunk-dim", type=AT_LEAST_ONE, default=64, show_default=True,
              help="Width of each attribute's chunk.")
@click.option("--hidden", type=AT_LEAST_ONE, default=256, show_default=True,
              help="Width of each projection's hidden layer.")
@click.option("--rest", type=click.Choice(RESTS), default="residual", show_default=True,
              help="The chunk that carries what no label names: the trunk's pooled features less "
                   "the mean features of the values the chunks read (residual), as they are "
                   "(trunk), or none.")
@click.option("--rest-weight", type=NOT_NEGATIVE, default=0.5, show_default=True,
              help="The rest chunk's weight against 1 for each attribute chunk.")
@click.option("--views", type=click.IntRange(1, 2), default=2, show_default=True,
              help="Features of each image as it is (1) and also mirrored (2).")
@click.option("--encoder-epochs", type=AT_LEAST_ZERO, default=10, show_default=True,
              help="Stage 1: the chunks by classification alone.")
@click.option("--epochs", type=AT_LEAST_ZERO, default=30, show_default=True,
              help="Stage 2: chunks and memory with every loss.")
@click.option("--batch-size", type=AT_LEAST_ONE, default=256, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True, help="Adam's learning rate.")
@click.option("--margin", type=NOT_NEGATIVE, default=0.2, show_default=True,
              help="Every triplet's margin.")
@click.option("--lambda-cls", type=NOT_NEGATIVE, default=1.0, show_default=True)
@click.option("--lambda-triplet", type=NOT_NEGATIVE, default=1.0, show_default=True,
              help="Label triplets, per chunk and on the whole embedding.")
@click.option("--lambda-manip", type=NOT_NEGATIVE, default=1.0, show_default=True,
              help="The manipulation triplet.")
@click.option("--lambda-consistency", type=NOT_NEGATIVE, default=1.0, show_default=True,
              help="Memory kept where the encoder puts each value's images.")
@click.option("--lambda-l1", type=NOT_NEGATIVE, default=1.0, show_default=True,
              help="L1 on the memory outside each prototype's own chunk.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Share of the split held out and graded in the log.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--threads", type=AT_LEAST_ONE, default=None,
              help="torch threads [default: OMP_NUM_THREADS if set, else the cores].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its latest checkpoint (same settings).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def train_adde(attributes, threads, quiet, **options) -> None:
    """Train the disentangled attribute embedding with its attribute memory (ADDE) on a catalog
    DB: the feature-space method, searched with its own index."""
    from amgan_search.cli.options import attribute_list
    from amgan_search.device import pick_device, set_torch_threads
    from amgan_search.train.adde import AddeConfig
    from amgan_search.train.adde import train_adde as run

    set_torch_threads(threads, role="build")
    names = attribute_list(attributes, "--attributes")
    options["device"] = pick_device(options["device"])
    config = AddeConfig(attributes=tuple(names) if names else None, progress=not quiet,
                        **options)
    with _resume_named():
        model = run(config)
    click.echo(f"model: {options['out']} ({model['epochs']} epochs, memory {model['memory']})")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (config.json + fp16 model.safetensors); never the "
                   "run or a folder holding it.")
@click.option("--step", type=AT_LEAST_ZERO, default=None,
              help="AMGAN runs: the checkpoint to export [default: the latest]; ADDE runs: the "
                   "epoch (at --encoder-epochs: the memory as initialised) [default: the model].")
@click.option("--best", is_flag=True,
              help="AMGAN runs trained with --val-scenes: the checkpoint the truth scored best.")
@click.option("--force", is_flag=True,
              help="Replace the model folder --out holds (files a model folder does not hold, "
                   "such as MODEL_CARD.md, stay).")
def export_model(run_dir, out, step, best, force) -> None:
    """Export a training run as a small fp16 model directory (how the shipped models are made).

    A classifier run exports its best model; an AMGAN run exports a checkpoint (the latest,
    --step, or --best), so a run still in progress can ship a snapshot that records the
    iterations actually done; an ADDE run its model, or with --step the checkpoint of that epoch.
    """
    from amgan_search.train.export import export_run

    if best and step is not None:
        raise UserError("--best and --step name two checkpoints; give one")
    model = export_run(run_dir, out, step, force=force, best=best)
    if model.get("kind") == "classifier":
        click.echo(f"model: {out} (classifier, role {model.get('role')}, {model.get('arch')})")
    elif model.get("kind") == "adde":
        click.echo(f"model: {out} (adde, {model['epochs']} epochs, memory {model['memory']})")
    else:
        click.echo(f"model: {out} ({model['method']}, {model['iterations']} iterations)")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="One JSON line per record, with its run, instead of the tables.")
def validation(run_dirs, as_json) -> None:
    """The truth's grades of each checkpoint of AMGAN runs trained with --val-scenes: score and,
    per attribute, truth accuracy, fidelity reduction and preservation; the checkpoint the run
    keeps as best/ (what `train export --best` exports) in bold."""
    import json

    from amgan_search.train.validation import run_validation, validation_table

    for i, run in enumerate(run_dirs):
        records, best = run_validation(run)
        if as_json:
            for r in records:
                click.echo(json.dumps({"run": run, **r}))
            continue
        if i:
            click.echo()
        kept = f"iteration {best}" if best is not None else "none"
        click.echo(f"{run} (best/: {kept})\n")
        click.echo(validation_table(records, best))


@click.group()
def model() -> None:
    """Model folders: the digests their loaders check."""


@model.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--check", is_flag=True, help="Only verify the folder against its SHA256SUMS.")
@click.option("--trust-unsummed", is_flag=True,
              help="Record sums over weights that nothing vouches for (no digest in their "
                   "metadata, not a shipped model's), as they are.")
def checksum(model_dir, check, trust_unsummed) -> None:
    """Record SHA256SUMS for a model folder that has none, or with --check verify it. Damage is
    never recorded as good: the weights must first match what records their checksum (the digest
    their metadata holds, or the registry's record of the shipped model the folder is a copy
    of), then load whole; weights nothing records are refused without --trust-unsummed. Says
    what it checked."""
    from amgan_search.registry import Unvouched, checksum_model

    try:
        done = checksum_model(model_dir, check=check, trust_unsummed=trust_unsummed)
    except Unvouched as exc:
        raise UserError(f"{exc} (pass --trust-unsummed)") from None
    click.echo(f"{model_dir}: {done}")
