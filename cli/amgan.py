"""`amgan-search train amgan`, `amgan-search edit` and `amgan-search evaluate-edits`."""

from __future__ import annotations

import os
from pathlib import Path

import click

# Presets and synthetic attribute names are repeated here rather than imported, so that `--help`
# does not import torch; tests check they match the library's.
METHODS = ("amgan", "stargan", "ganimation", "sagan", "no-dc", "no-perceptual",
           "no-attention-loss", "cam-as-mask")
SYNTHETIC_ATTRIBUTE_OPTIONS = ("color", "sleeve", "pattern")
UPSAMPLINGS = ("resize", "deconv")  # amgan.UPSAMPLINGS, the default first


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
@click.option("--size", type=int, default=64, show_default=True, help="Image size.")
@click.option("--iters", type=int, default=20000, show_default=True,
              help="Iterations, counted as D updates (G every --n-critic).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=1e-4, show_default=True,
              help="Adam learning rate (decays linearly to 0 over the second half).")
@click.option("--n-critic", type=int, default=5, show_default=True, help="D updates per G update.")
# -- loss weights
@click.option("--lambda-cls", type=float, default=1.0, show_default=True)
@click.option("--lambda-cyc", type=float, default=10.0, show_default=True)
@click.option("--lambda-a", type=float, default=10.0, show_default=True, help="Attention loss L_a.")
@click.option("--lambda-p", type=float, default=20.0, show_default=True,
              help="Perceptual loss L_p (the paper: 10 on Shopping100k).")
@click.option("--lambda-gp", type=float, default=10.0, show_default=True)
@click.option("--avgpool-only", is_flag=True,
              help="L_p on avg-pool features only (the paper's Shopping100k setting).")
# -- architecture
@click.option("--g-conv-dim", type=int, default=32, show_default=True)
@click.option("--g-repeat-num", type=int, default=3, show_default=True,
              help="Residual blocks in G.")
@click.option("--g-upsample", type=click.Choice(UPSAMPLINGS), default=UPSAMPLINGS[0],
              show_default=True,
              help="G's up-sampling: nearest x2 + 3x3 conv, or StarGAN's transposed convolutions.")
@click.option("--d-conv-dim", type=int, default=32, show_default=True)
@click.option("--d-repeat-num", type=int, default=5, show_default=True,
              help="Stride-2 layers of D_I (D_C has 2 fewer).")
# -- bookkeeping
@click.option("--sample-every", type=int, default=1000, show_default=True)
@click.option("--ckpt-every", type=int, default=1000, show_default=True)
@click.option("--log-every", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers.")
@click.option("--threads", type=int, default=None,
              help="CPU threads for torch (1 when other jobs share the CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option("--bf16/--no-bf16", default=None,
              help="bf16 autocast (default: on where the GPU or CPU does bf16 natively).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format.")
@click.option("--augment", is_flag=True, help="Label-preserving flips and shifts.")
@click.option("--resume", is_flag=True, help="Continue from the run directory's latest checkpoint.")
@click.option("--stop-at", type=int, default=None,
              help="Stop after this iteration with a checkpoint and a model, the schedule still "
                   "planned for --iters (time-boxed sessions; --resume goes on).")
def train_amgan(db, out, method, classifier, split, size, iters, batch_size, lr, n_critic,
                lambda_cls, lambda_cyc, lambda_a, lambda_p, lambda_gp, avgpool_only, g_conv_dim,
                g_repeat_num, g_upsample, d_conv_dim, d_repeat_num, sample_every, ckpt_every,
                log_every, seed, workers, threads, device, bf16, channels_last, augment, resume,
                stop_at) -> None:
    """Train AMGAN or a baseline; works the same under `torchrun --nproc_per_node N`."""
    from amgan_search.train_amgan import AmganConfig, train_amgan as run

    config = AmganConfig(
        db=db, out=out, method=method, classifier=classifier, split=split or None, size=size,
        iters=iters, batch_size=batch_size, lr=lr, n_critic=n_critic, lambda_cls=lambda_cls,
        lambda_cyc=lambda_cyc, lambda_a=lambda_a, lambda_p=lambda_p, lambda_gp=lambda_gp,
        perceptual_conv5=not avgpool_only, g_conv_dim=g_conv_dim, g_repeat_num=g_repeat_num,
        g_upsample=g_upsample, d_conv_dim=d_conv_dim, d_repeat_num=d_repeat_num,
        sample_every=sample_every, ckpt_every=ckpt_every, log_every=log_every, seed=seed,
        workers=workers, threads=threads, device=device, bf16=bf16, channels_last=channels_last,
        augment=augment, resume=resume, stop_at=stop_at)
    path = run(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line, not one per process
        click.echo(f"model: {path}")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (config.json + fp16 model.safetensors).")
@click.option("--step", type=int, default=None,
              help="AMGAN runs: the checkpoint to export [default: the latest].")
def export_model(run_dir, out, step) -> None:
    """Export a training run as a small fp16 model directory (how the shipped models are made).

    A classifier run exports its best model; an AMGAN run exports a checkpoint, so a run still
    in progress can ship a snapshot that records the iterations actually done.
    """
    from amgan_search import checkpoint as ckpt

    run = Path(run_dir)
    if (run / ckpt.CONFIG).is_file() and ckpt.read_json(run / ckpt.CONFIG).get("kind") == "classifier":
        from amgan_search.train_classifier import export_classifier

        config = export_classifier(run, out)
        click.echo(f"model: {out} (classifier, role {config.get('role')}, {config.get('arch')})")
        return
    from amgan_search.train_amgan import export_model as export_amgan

    model = export_amgan(run, out, step)
    click.echo(f"model: {out} ({model['method']}, {model['iterations']} iterations)")


def _parse_sets(pairs) -> dict[str, str]:
    from amgan_search.errors import UserError

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--set {pair!r}: expected attribute=value")
        name, value = pair.split("=", 1)
        out[name.strip()] = value.strip()
    return out


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--color", default=None, help="Target color.")
@click.option("--sleeve", default=None, help="Target sleeve length.")
@click.option("--pattern", default=None, help="Target pattern (schemas that have one).")
@click.option("--set", "sets", multiple=True, metavar="ATTRIBUTE=VALUE",
              help="Any attribute of the model's schema; repeatable.")
@click.option("--only-region", default=None, metavar="REGION",
              help="Confine the edits to a region: 'sleeves' or attribute=value "
                   "(that manipulation's attention above 0.9).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for <stem>_edit.png and <stem>_mask.png.")
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory (default: the shipped model of --method).")
@click.option("--method", type=click.Choice(["amgan", "stargan"]), default="amgan",
              show_default=True, help="Which shipped model, when --model is not given.")
@click.option("--device", default="cpu", show_default=True)
def edit(images, color, sleeve, pattern, sets, only_region, out, model, method, device) -> None:
    """Edit images toward attributes: writes DIR/<stem>_edit.png and DIR/<stem>_mask.png."""
    import numpy as np

    from amgan_search import checkpoint as ckpt
    from amgan_search.errors import UserError
    from amgan_search.images import load_image, save_image
    from amgan_search.schema import Schema

    targets = {k: v for k, v in (("color", color), ("sleeve", sleeve), ("pattern", pattern))
               if v is not None}
    targets.update(_parse_sets(sets))
    # Check the targets against the model's schema before loading any weights.
    path = Path(model) if model else ckpt.shipped_model(method)
    schema = Schema.from_dict(ckpt.read_json(path / ckpt.CONFIG).get("schema") or {})
    for name, value in targets.items():
        schema.attribute(name).index(value)
    if not targets:
        raise UserError(f"no target given; options for this model: "
                        + ", ".join(f"--{n}" for n in schema.names))
    from amgan_search.manipulate import Manipulator

    manipulator = Manipulator.load(path, device=device)
    if only_region is not None:
        manipulator.parse_region(only_region)
    pictures = [(Path(p), load_image(p)) for p in images]  # every file checked before any work
    for p, image in pictures:
        edited, masks = manipulator.edit(image, only_region=only_region, **targets)
        mask = np.max(np.stack(list(masks.values())), axis=0)
        save_image(Path(out) / f"{p.stem}_edit.png", edited)
        save_image(Path(out) / f"{p.stem}_mask.png", (mask * 255 + 0.5).astype(np.uint8))
        click.echo(f"{p} -> {Path(out) / (p.stem + '_edit.png')}")


@click.command()
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory (default: the shipped model of --method).")
@click.option("--method", type=click.Choice(["amgan", "stargan"]), default="amgan",
              show_default=True, help="Which shipped model, when --model is not given.")
@click.option("--eval-classifier", default="eval", show_default=True,
              help="Evaluation classifier directory, or 'eval' for the shipped classifier-eval.")
@click.option("--n", "n", type=int, default=100, show_default=True, help="Test scenes.")
@click.option("--seed", type=int, default=777, show_default=True, help="Test scenes' seed.")
@click.option("--size", type=int, default=64, show_default=True, help="Render size.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also write the markdown table here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
@click.option("--grid", default=None, type=click.Path(dir_okay=False),
              help="Also draw a PNG of six of the scenes: input, then per target the true edit, "
                   "the model's edit and its attention mask.")
@click.option("--device", default="cpu", show_default=True)
def evaluate_edits(model, method, eval_classifier, n, seed, size, out, as_json, grid,
                   device) -> None:
    """Grade edits against the synthetic renderer's truth: accuracy, fidelity, preservation, IoU."""
    import json

    from amgan_search import checkpoint as ckpt
    from amgan_search.classifier import load_classifier
    from amgan_search.edit_quality import evaluate_edits as run, markdown_table
    from amgan_search.errors import UserError
    from amgan_search.manipulate import Manipulator

    if n < 1:
        raise UserError("--n must be at least 1")
    manipulator = Manipulator.load(model, method=method, device=device)
    judge = load_classifier(None if eval_classifier == "eval" else eval_classifier, role="eval",
                            device=device)
    results = run(manipulator, judge, n=n, seed=seed, size=size)
    table = markdown_table(results)
    if out:
        ckpt.write_text(out, table)
    if grid:
        from amgan_search.edit_quality import edit_grid
        from amgan_search.images import save_image

        save_image(grid, edit_grid(manipulator, n=min(n, 6), seed=seed, size=size))
    click.echo(json.dumps(results, indent=2) if as_json else table)
