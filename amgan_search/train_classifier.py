"""Training the attribute classifier: the CNN+CAM network AMGAN trains against, or the evaluation one.

Choices the paper leaves open, made here:
- Loss: cross-entropy per attribute, missing labels ignored, averaged over the attributes present
  in the batch. Class imbalance (DeepFashion-Synthesis is far from balanced) is met with
  per-attribute class weights proportional to 1/sqrt(frequency), scaled so that the average weight
  of a training sample is 1. A balanced sampler cannot balance several attributes at once; the
  square root keeps rare values from dominating the loss the way 1/frequency would.
- Model selection: the best epoch by mean per-attribute accuracy on a held-out part of the train
  split (`val_fraction`, 10% by default, chosen from the seed), so the test split never picks a
  checkpoint; the chosen model's test-split accuracy is recorded at the end. `val_fraction=0`
  validates on the test split instead.
- Optimiser: AdamW (or SGD with Nesterov momentum), a linear warm-up, then a cosine decay to 0
  over all steps, stepped per batch.
- Resume: a checkpoint every `checkpoint_every` steps and at each epoch's end holds weights,
  optimiser, scheduler, RNG state, epoch and position in the epoch. The order of each epoch is a
  permutation drawn from (seed, epoch), so a resumed run skips exactly the batches already done.
  Augmentation draws in DataLoader workers are not replayed. Resuming with more epochs stretches
  the cosine schedule over the new total from the saved step on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .checkpoint import (CONFIG, WEIGHTS, latest_checkpoint, load_checkpoint, load_model_dir,
                         load_weights, save_checkpoint, save_weights, write_json, save_model_dir)
from .classifier import ARCHS, ROLES, AttributeClassifier, default_output_stride
from .errors import UserError
from .schema import MISSING, Schema

OPTIMIZERS = ("adamw", "sgd")
# Defaults by role. The evaluation classifier must not share the CAM network's seed or its
# architecture (DESIGN.md, metrics): a deeper ResNet-34 at the standard stride 32 (no CAM is drawn
# from it), measured at 1.5-2x the CAM network's (ResNet-18, stride 16) training time per image on
# CPU at 64x64.
ROLE_DEFAULTS = {"cam": {"arch": "resnet18", "seed": 0}, "eval": {"arch": "resnet34", "seed": 1}}
TRAIN_LOG = "log.jsonl"
TRAIN_CONFIG = "train_config.json"


@dataclass
class ClassifierConfig:
    db: str | None = None                 # catalog DB; None when datasets are passed directly
    out: str = "runs/classifier"
    role: str = "cam"                     # "cam" (attention truth, features, embedder) or "eval"
    arch: str | None = None               # None: resnet18 for cam, resnet34 for eval
    size: int = 64
    output_stride: int | None = None      # None: from size and role (classifier.default_output_stride)
    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float | None = None               # None: 1e-3 for adamw, 0.05 for sgd
    weight_decay: float | None = None     # None: 0.01 for adamw, 5e-4 for sgd
    warmup_steps: int | None = None       # None: 5% of all steps, at most 500
    seed: int | None = None               # None: 0 for cam, 1 for eval
    init: str = "scratch"                 # "scratch", "imagenet", or a classifier directory
    val_fraction: float = 0.1
    workers: int = 2
    device: str = "auto"
    channels_last: bool | None = None     # None: on CUDA only (no gain measured on CPU training)
    checkpoint_every: int = 500
    log_every: int = 20
    max_steps: int | None = None          # stop at this global step with a resumable checkpoint
    resume: bool = False
    progress: bool = True

    def resolved(self) -> "ClassifierConfig":
        """A copy with every None default filled in, after checking the values."""
        if self.role not in ROLES:
            raise UserError(f"unknown classifier role {self.role!r}; valid: {', '.join(ROLES)}")
        c = dataclasses.replace(self)
        defaults = ROLE_DEFAULTS[c.role]
        c.arch = c.arch or defaults["arch"]
        c.seed = defaults["seed"] if c.seed is None else int(c.seed)
        if c.arch not in ARCHS:
            raise UserError(f"unknown architecture {c.arch!r}; valid: {', '.join(ARCHS)}")
        if c.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {c.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if c.size < 16:
            raise UserError(f"image size {c.size} is too small (at least 16)")
        if c.epochs < 0 or c.batch_size < 1 or c.workers < 0:
            raise UserError("epochs and workers must be >= 0 and batch size >= 1")
        if not 0.0 <= c.val_fraction < 1.0:
            raise UserError(f"val fraction {c.val_fraction} must be in [0, 1)")
        c.output_stride = c.output_stride or default_output_stride(c.size, c.role)
        c.lr = c.lr if c.lr is not None else {"adamw": 1e-3, "sgd": 0.05}[c.optimizer]
        if c.weight_decay is None:
            c.weight_decay = {"adamw": 0.01, "sgd": 5e-4}[c.optimizer]
        if c.device == "auto":
            c.device = "cuda" if torch.cuda.is_available() else "cpu"
        if c.channels_last is None:
            c.channels_last = c.device.startswith("cuda")
        return c


# -- initialisation -----------------------------------------------------------------------------

def imagenet_weights_path(arch: str) -> tuple[Path, str]:
    """(where torchvision's ImageNet weights for `arch` are expected in the torch hub cache, their URL)."""
    import torchvision

    enum = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
            "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[arch]
    url = getattr(torchvision.models, enum).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, url


def check_init(init: str, arch: str) -> None:
    """Fail before any data is read when the initial weights are not where they should be."""
    if init == "scratch":
        return
    if init == "imagenet":
        path, url = imagenet_weights_path(arch)
        if not path.is_file():
            # Never downloads: the machine this runs on may have no network, and a silent
            # download inside a training command is a surprise.
            raise UserError(f"{path}: ImageNet weights for {arch} not found; download {url} "
                            f"and put the file there (the directory follows $TORCH_HOME)")
        return
    if not (Path(init) / WEIGHTS).is_file():
        raise UserError(f"{init}: not 'scratch', 'imagenet' or a classifier directory "
                        f"with {WEIGHTS}")


def initialise(model: AttributeClassifier, init: str) -> str:
    """Load the initial weights `init` names into `model`; returns what was loaded, for the log."""
    check_init(init, model.config["arch"])
    if init == "scratch":
        return "scratch"
    if init == "imagenet":
        path, _ = imagenet_weights_path(model.config["arch"])
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt or unsafe file
            raise UserError(f"{path}: unreadable ImageNet weights ({exc})") from None
        # The ImageNet classifier (fc) has no place here: our heads start fresh.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"{path}: not {model.config['arch']} weights "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return f"imagenet:{path.name}"
    config, tensors = load_model_dir(init, kind="classifier")
    if config.get("arch") != model.config["arch"]:
        raise UserError(f"{init}: holds a {config.get('arch')} classifier, not a "
                        f"{model.config['arch']}")
    own = model.state_dict()
    # Heads carry over only when they predict the same values in the same order.
    same_schema = config.get("schema") == model.schema.to_dict()
    keep = {k: v for k, v in tensors.items()
            if k in own and own[k].shape == v.shape and (same_schema or not k.startswith("heads."))}
    model.load_state_dict(keep, strict=False)
    return f"dir:{init}" + ("" if same_schema else " (backbone only: another schema)")


# -- data ---------------------------------------------------------------------------------------

class EpochSampler(Sampler):
    """A permutation of range(n) drawn from (seed, epoch), from position `skip` on."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g)[self.skip:].tolist())

    def __len__(self) -> int:
        return max(0, self.n - self.skip)


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Label indices [n, M] of a dataset: its `.labels`, through Subsets, else read item by item."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    return np.stack([np.asarray(dataset[i][1], dtype=np.int64) for i in range(len(dataset))])


def class_weights(labels: np.ndarray, schema: Schema) -> list[torch.Tensor]:
    """Per attribute, weights proportional to 1/sqrt(frequency), mean 1 over the labelled samples."""
    weights = []
    for j, attr in enumerate(schema.attributes):
        known = labels[:, j][labels[:, j] != MISSING]
        counts = np.bincount(known, minlength=len(attr.values)).astype(np.float64)
        w = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)
        if counts.sum() > 0:
            w = w * counts.sum() / (w * counts).sum()
        weights.append(torch.tensor(w, dtype=torch.float32))
    return weights


def _holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): a fixed share of the items, chosen from the seed."""
    n_val = int(round(n * fraction))
    if fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def _open_catalog_data(config: ClassifierConfig):
    from .data import CatalogImages

    db = Path(config.db)
    if not db.is_file():
        raise UserError(f"{db}: no such catalog DB")
    train_aug = CatalogImages(db, split="train", size=config.size, augment=True)
    if len(train_aug) == 0:
        raise UserError(f"{db}: the catalog has no items in the 'train' split")
    test = CatalogImages(db, split="test", size=config.size, augment=False)
    test = test if len(test) else None
    if config.val_fraction > 0:
        plain = CatalogImages(db, split="train", size=config.size, augment=False)
        fit, held = _holdout(len(train_aug), config.val_fraction, config.seed)
        return train_aug.schema, Subset(train_aug, fit), Subset(plain, held), test
    if test is None:
        raise UserError(f"{db}: no 'test' split to validate on; use a val fraction above 0")
    return train_aug.schema, train_aug, test, test


# -- evaluation ---------------------------------------------------------------------------------

def evaluate_classifier(model: AttributeClassifier, dataset: Dataset, batch_size: int = 128,
                        workers: int = 0, device: str = "cpu", channels_last: bool = False) -> dict:
    """Accuracy per attribute on a dataset, missing labels left out, and their mean."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    m = model.schema.n_attributes
    correct, seen = np.zeros(m), np.zeros(m)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            predicted, _ = model.predict(x)
            predicted, y = predicted.cpu().numpy(), y.numpy()
            known = y != MISSING
            correct += ((predicted == y) & known).sum(axis=0)
            seen += known.sum(axis=0)
    model.train(was_training)
    accuracy = {name: (float(correct[j] / seen[j]) if seen[j] else None)
                for j, name in enumerate(model.schema.names)}
    present = [a for a in accuracy.values() if a is not None]
    return {"accuracy": accuracy, "mean_accuracy": float(np.mean(present)) if present else 0.0,
            "n": len(dataset)}


# -- training -----------------------------------------------------------------------------------

def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# The fields that define the model and the data order: a resumed run must match them.
_RESUME_FIXED = ("role", "arch", "size", "output_stride", "batch_size", "seed", "val_fraction",
                 "optimizer", "db")


def train_classifier(config: ClassifierConfig, train_set: Dataset | None = None,
                     val_set: Dataset | None = None, test_set: Dataset | None = None,
                     schema: Schema | None = None) -> dict:
    """Train a classifier into `config.out`; the best epoch is kept as config.json + model.safetensors.

    Data comes from `config.db` (train split, held-out validation, test split) or from the
    datasets passed in, which return (image float [3, S, S] in [0, 1], labels int64 [M]).
    Without `val_set`, a `val_fraction` share of `train_set` is held out.
    Returns a summary: steps, epochs, best validation and test metrics, seconds per epoch.
    """
    from tqdm import tqdm

    c = config.resolved()
    check_init(c.init, c.arch)
    out = Path(c.out)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not c.resume:
        raise UserError(f"{out}: holds a training run already; pass --resume to continue it "
                        "or choose another --out")
    if ckpt is not None:
        saved = json.loads((out / TRAIN_CONFIG).read_text()) if (out / TRAIN_CONFIG).is_file() else {}
        changed = [k for k in _RESUME_FIXED if k in saved and saved[k] != getattr(c, k)]
        if changed:
            raise UserError(f"{out}: cannot resume with another "
                            + ", ".join(f"{k} ({saved[k]!r} -> {getattr(c, k)!r})" for k in changed))

    # 1. data
    if train_set is None:
        if c.db is None:
            raise UserError("no catalog DB given (--db) and no datasets passed")
        schema, train_set, val_set, test_set = _open_catalog_data(c)
    else:
        if schema is None:
            schema = getattr(train_set, "schema", None)
        if schema is None:
            raise ValueError("train_classifier: pass the schema with datasets that carry none")
        if val_set is None:
            if c.val_fraction > 0:
                fit, held = _holdout(len(train_set), c.val_fraction, c.seed)
                train_set, val_set = Subset(train_set, fit), Subset(train_set, held)
            else:
                val_set = test_set
    if len(train_set) == 0:
        raise UserError("no training items")

    # 2. model
    random.seed(c.seed)
    np.random.seed(c.seed)
    torch.manual_seed(c.seed)
    device = torch.device(c.device)
    model = AttributeClassifier(schema, arch=c.arch, size=c.size, output_stride=c.output_stride,
                                role=c.role, seed=c.seed)
    init_note = initialise(model, c.init)
    model.to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    weights = [w.to(device) for w in class_weights(dataset_labels(train_set), schema)]

    # 3. optimiser and schedule
    n_train = len(train_set)
    drop_last = n_train >= c.batch_size
    steps_per_epoch = n_train // c.batch_size if drop_last else 1
    total_steps = c.epochs * steps_per_epoch
    warmup = c.warmup_steps if c.warmup_steps is not None else min(500, total_steps // 20)
    decay, no_decay = [], []
    for p in model.parameters():
        # Our choice, the common one: no weight decay on BatchNorm scales and biases.
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": c.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if c.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=c.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, total_steps))

    # 4. state, fresh or resumed
    step, epoch, batch_in_epoch = 0, 0, 0
    best = {"mean_accuracy": -1.0}
    if ckpt is not None:
        tensors, state = load_checkpoint(ckpt)
        model.load_state_dict(tensors)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best = state["best"]
        print(f"resuming {out} from step {step} (epoch {epoch + 1}, batch {batch_in_epoch})",
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    run_config = {k: v for k, v in dataclasses.asdict(c).items() if k not in ("resume", "progress")}
    write_json(out / TRAIN_CONFIG, run_config)
    log = open(out / TRAIN_LOG, "a")

    def emit(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    def checkpoint() -> None:
        save_checkpoint(out, step, model.state_dict(), {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_state(), "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best": best})

    sampler = EpochSampler(n_train, c.seed)
    loader = DataLoader(train_set, batch_size=c.batch_size, sampler=sampler, drop_last=drop_last,
                        num_workers=c.workers, persistent_workers=c.workers > 0,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(c.seed + step))
    eval_kw = dict(batch_size=2 * c.batch_size, workers=c.workers, device=device,
                   channels_last=c.channels_last)
    epoch_seconds = []
    stopped = c.max_steps is not None and step >= c.max_steps
    try:
        while epoch < c.epochs and not stopped:
            # 5. one epoch of training
            sampler.set_epoch(epoch, skip=batch_in_epoch * c.batch_size)
            model.train()
            started = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=batch_in_epoch, file=sys.stderr,
                       desc=f"epoch {epoch + 1}/{c.epochs}", disable=not c.progress,
                       dynamic_ncols=True, leave=False)
            running, seen = 0.0, 0
            for x, y in loader if batch_in_epoch < steps_per_epoch else ():
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if c.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                losses = [F.cross_entropy(z, y[:, j], weight=weights[j], ignore_index=MISSING)
                          for j, z in enumerate(model(x)) if bool((y[:, j] != MISSING).any())]
                if losses:
                    loss = torch.stack(losses).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    running, seen = running + float(loss.detach()), seen + 1
                scheduler.step()
                step += 1
                batch_in_epoch += 1
                bar.update(1)
                if step % c.log_every == 0 and seen:
                    lr = optimizer.param_groups[0]["lr"]
                    emit({"event": "train", "step": step, "epoch": epoch + 1,
                          "loss": running / seen, "lr": lr})
                    bar.set_postfix(loss=f"{running / seen:.3f}")
                    running, seen = 0.0, 0
                if c.max_steps is not None and step >= c.max_steps:
                    stopped = True
                    break
                if step % c.checkpoint_every == 0:
                    checkpoint()
            bar.close()
            if stopped and batch_in_epoch < steps_per_epoch:
                break
            if seen:
                emit({"event": "train", "step": step, "epoch": epoch + 1,
                      "loss": running / seen, "lr": optimizer.param_groups[0]["lr"]})
            seconds = time.perf_counter() - started
            epoch_seconds.append(seconds)

            # 6. validate, keep the best
            metrics = evaluate_classifier(model, val_set, **eval_kw) if val_set is not None else \
                {"accuracy": {}, "mean_accuracy": 0.0, "n": 0}
            emit({"event": "val", "step": step, "epoch": epoch + 1, "seconds": seconds, **metrics})
            acc = ", ".join(f"{k} {v:.3f}" for k, v in metrics["accuracy"].items() if v is not None)
            print(f"epoch {epoch + 1}/{c.epochs}: {seconds:.0f} s, validation {acc or '-'}",
                  file=sys.stderr)
            epoch += 1
            batch_in_epoch = 0
            if metrics["mean_accuracy"] > best["mean_accuracy"] or not (out / WEIGHTS).is_file():
                best = {"epoch": epoch, "step": step, **metrics}
                save_weights(out / WEIGHTS, model.state_dict())
                _write_model_config(out, model, c, init_note, best, None, n_train, val_set, test_set)
            checkpoint()
        if stopped:
            checkpoint()
    finally:
        log.close()

    # 7. the chosen model on the test split
    test_metrics = None
    if not stopped and test_set is not None and (out / WEIGHTS).is_file():
        model.load_state_dict(load_weights(out / WEIGHTS, device=str(device)))
        test_metrics = evaluate_classifier(model, test_set, **eval_kw)
        _write_model_config(out, model, c, init_note, best, test_metrics, n_train, val_set, test_set)
        with open(out / TRAIN_LOG, "a") as f:
            f.write(json.dumps({"event": "test", "step": best.get("step"), **test_metrics}) + "\n")
    return {"out": str(out), "step": step, "epoch": epoch, "stopped": stopped,
            "steps_per_epoch": steps_per_epoch, "best": best, "test": test_metrics,
            "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None}


def _write_model_config(out: Path, model: AttributeClassifier, c: ClassifierConfig,
                        init_note: str, best: dict, test: dict | None, n_train: int,
                        val_set, test_set) -> None:
    """config.json beside the chosen weights: what the model is, how it was trained, its metrics."""
    write_json(out / CONFIG, {
        "kind": "classifier", "role": c.role, "arch": c.arch, "size": c.size,
        "output_stride": c.output_stride, "schema": model.schema.to_dict(), "seed": c.seed,
        "embed_dim": model.embed_dim, "init": init_note,
        "metrics": {"validation": best, "test": test},
        "data": {"db": c.db, "train": n_train,
                 "validation": len(val_set) if val_set is not None else 0,
                 "test": len(test_set) if test_set is not None else 0,
                 "validation_source": "held-out train" if c.val_fraction > 0 else "test split"},
        "train": {k: v for k, v in dataclasses.asdict(c).items() if k not in ("resume", "progress")},
    })


def export_classifier(run_dir: str | Path, out: str | Path) -> dict:
    """A run's best model -> a model directory in fp16 (how the shipped classifiers are made)."""
    config, tensors = load_model_dir(run_dir, kind="classifier")
    save_model_dir(out, config, tensors, half=True)
    return config
