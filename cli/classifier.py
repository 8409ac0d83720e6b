"""`amgan-search train classifier` (the CNN+CAM network or the evaluation classifier) and
`amgan-search classify` (predict the attributes of images)."""

from __future__ import annotations

import json
from pathlib import Path

import click

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


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
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@click.option("--output-stride", type=click.Choice(["8", "16", "32"]), default=None,
              help="Input / last conv map side [default: the largest that leaves a last map of "
                   "at least 8x8 for cam (8 at 64 px), 4x4 for eval (16 at 64 px)].")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 1e-3 adamw, 0.05 sgd].")
@click.option("--weight-decay", type=float, default=None,
              help="[default: 0.01 adamw, 5e-4 sgd]")
@click.option("--seed", type=int, default=None, help="[default: 0 for cam, 1 for eval]")
@click.option("--init", default="scratch", show_default=True,
              help="scratch, imagenet (torchvision weights from the torch hub cache; never "
                   "downloaded), or a classifier directory to start from.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Share of the train split held out to pick the best epoch; 0 validates on "
                   "the test split.")
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader workers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--checkpoint-every", type=int, default=500, show_default=True,
              help="Steps between resumable checkpoints (one is also written each epoch).")
@click.option("--max-steps", type=int, default=None,
              help="Stop at this step with a resumable checkpoint (for time-boxed sessions).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_classifier(db_path, out, role, arch, size, output_stride, epochs, batch_size, optimizer,
                     lr, weight_decay, seed, init, val_fraction, workers, device, checkpoint_every,
                     max_steps, resume, quiet) -> None:
    """Train the attribute classifier (one head per attribute) on a catalog DB."""
    from amgan_search.train_classifier import ClassifierConfig
    from amgan_search.train_classifier import train_classifier as train

    config = ClassifierConfig(
        db=db_path, out=out, role=role, arch=arch, size=size,
        output_stride=int(output_stride) if output_stride else None, epochs=epochs,
        batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay, seed=seed,
        init=init, val_fraction=val_fraction, workers=workers, device=device,
        checkpoint_every=checkpoint_every, max_steps=max_steps, resume=resume, progress=not quiet)
    summary = train(config)
    best = summary["best"]
    if summary["stopped"]:
        click.echo(f"{out}: stopped at step {summary['step']}; continue with --resume")
        return
    acc = ", ".join(f"{k} {v:.3f}" for k, v in best.get("accuracy", {}).items() if v is not None)
    test = summary["test"]
    test_acc = ", ".join(f"{k} {v:.3f}" for k, v in test["accuracy"].items()
                         if v is not None) if test else "-"
    click.echo(f"{out}: best epoch {best.get('epoch')} (validation {acc or '-'}; test {test_acc})")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--classifier", "which", default="eval", show_default=True,
              help="A classifier directory, or cam / eval for the shipped ones.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON list of {path, attributes: {name: {value, probability}}}.")
@click.option("--batch-size", type=int, default=64, show_default=True)
def classify(images, which, as_json, batch_size) -> None:
    """Predict each attribute of IMAGES with its probability."""
    import torch

    from amgan_search.images import fit_square, load_image, to_tensor

    model = _load(which)
    results = []
    for start in range(0, len(images), batch_size):
        paths = images[start:start + batch_size]
        squares = [fit_square(load_image(p), model.size)[0] for p in paths]
        with torch.no_grad():
            indices, probs = model.predict(to_tensor(squares))
        for path, idx, prob in zip(paths, indices.tolist(), probs.tolist()):
            results.append({"path": str(path), "attributes": {
                a.name: {"value": a.values[i], "probability": round(p, 4)}
                for a, i, p in zip(model.schema.attributes, idx, prob)}})
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        parts = ", ".join(f"{name}={v['value']} ({v['probability']:.2f})"
                          for name, v in r["attributes"].items())
        click.echo(f"{r['path']}: {parts}")


def _load(which: str):
    """A directory of that name wins; otherwise cam / eval name the shipped models."""
    from amgan_search.classifier import load_classifier

    if which in ("cam", "eval") and not Path(which).is_dir():
        return load_classifier(None, role=which)
    return load_classifier(which)


@click.command()
@click.option("--classifier", "which", default="cam", show_default=True,
              help="A classifier directory, or cam / eval for the shipped ones.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Catalog DB whose split to score (e.g. a catalog rendered from an unseen seed).")
@click.option("--split", default="test", show_default=True, help="Split of --db to score.")
@click.option("--cam-scenes", type=click.IntRange(min=0), default=200, show_default=True,
              help="Synthetic scenes for the CAM IoU against the true masks (0: skip).")
@click.option("--seed", type=int, default=777, show_default=True, help="Seed of those scenes.")
@click.option("--cam-sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw a PNG: scenes and the CAM of their own value of each attribute.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_classifier(which, db, split, cam_scenes, seed, cam_sheet, as_json) -> None:
    """Accuracy per attribute on a catalog split, and CAM IoU against the synthetic truth."""
    import json

    from amgan_search.cam_quality import cam_iou

    model = _load(which)
    report = {"classifier": which, "role": model.role, "arch": model.config.get("arch")}
    if db:
        from amgan_search.data import CatalogImages
        from amgan_search.train_classifier import evaluate_classifier as score

        report["accuracy"] = score(model, CatalogImages(db, split=split, size=model.size))
        report["accuracy"].update(db=str(db), split=split)
    if cam_scenes:
        report["cam_iou"] = cam_iou(model, n=cam_scenes, seed=seed)
    if cam_sheet:
        from amgan_search.cam_quality import cam_sheet as draw

        draw(model, cam_sheet, seed=seed)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"classifier {which} ({report['role']}, {report['arch']})")
    if "accuracy" in report:
        acc = report["accuracy"]
        click.echo(f"accuracy on {db} [{split}], {acc['n']} items: " + ", ".join(
            f"{k} {v:.4f}" for k, v in acc["accuracy"].items() if v is not None))
    for name, r in report.get("cam_iou", {}).items():
        click.echo(f"CAM IoU {name} vs {r['region']}: {r['mean_iou']:.3f} ({r['n']} scenes)")
