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
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from amgan_search.checkpoint import WEIGHTS, load_model_dir, save_model_dir, save_model_files
from amgan_search.device import pick_device
from amgan_search.errors import UserError
from amgan_search.nets.classifier import (ARCHS, OUTPUT_STRIDES, ROLES, AttributeClassifier,
                                          default_output_stride)
from amgan_search.registry import read_model
from amgan_search.schema import MISSING, Schema
from amgan_search.train.classifier_data import (EpochSampler, Splits, accuracy_line, catalog_splits,
                                                class_weights, dataset_labels, evaluate_classifier,
                                                given_splits)
from amgan_search.train.checks import SEED_MAX, TRAIN_SIZES, number, whole
from amgan_search.train.classifier_init import check_init, initialise
from amgan_search.train.loop import (RunFolder, check_resume, open_run, progress_bar, rng_state,
                                     set_rng_state)

OPTIMIZERS = ("adamw", "sgd")
# Defaults by role. The evaluation classifier must not share the CAM network's seed or its
# architecture (DESIGN.md, metrics): a deeper ResNet-34 at the standard stride 32 (no CAM is drawn
# from it), measured at 1.5-2x the CAM network's (ResNet-18, stride 16) training time per image on
# CPU at 64x64.
ROLE_DEFAULTS = {"cam": {"arch": "resnet18", "seed": 0}, "eval": {"arch": "resnet34", "seed": 1}}


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
        c.seed = defaults["seed"] if c.seed is None else c.seed
        if c.arch not in ARCHS:
            raise UserError(f"unknown architecture {c.arch!r}; valid: {', '.join(ARCHS)}")
        if c.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {c.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        _check_numbers(c)
        c.output_stride = c.output_stride or default_output_stride(c.size, c.role)
        c.lr = c.lr if c.lr is not None else {"adamw": 1e-3, "sgd": 0.05}[c.optimizer]
        if c.weight_decay is None:
            c.weight_decay = {"adamw": 0.01, "sgd": 5e-4}[c.optimizer]
        c.device = pick_device(c.device)
        if c.channels_last is None:
            c.channels_last = c.device.startswith("cuda")
        return c


def _check_numbers(c: ClassifierConfig) -> None:
    """Types and ranges, field by field (the command line's click ranges say the same)."""
    whole(c, ("size",), *TRAIN_SIZES)
    whole(c, ("epochs", "batch_size", "checkpoint_every", "log_every"), 1)
    whole(c, ("max_steps",), 1, optional=True)
    whole(c, ("workers",), 0)
    whole(c, ("warmup_steps",), 0, optional=True)
    whole(c, ("seed",), 0, SEED_MAX)
    number(c, ("lr",), 0, above=True, optional=True)
    number(c, ("weight_decay",), 0, optional=True)
    number(c, ("val_fraction",), 0, 1, below=True)
    if c.output_stride is not None and c.output_stride not in OUTPUT_STRIDES:
        raise UserError(f"output stride {c.output_stride!r} not supported; valid: "
                        f"{', '.join(map(str, OUTPUT_STRIDES))}")


# The fields that define the model, the data order and the optimisation: a resumed run must match
# them. Not `epochs`: resuming with more stretches the cosine schedule over the new total.
_RESUME_FIXED = ("role", "arch", "size", "output_stride", "batch_size", "seed", "val_fraction",
                 "optimizer", "lr", "weight_decay", "warmup_steps", "db")


def train_classifier(config: ClassifierConfig, train_set: Dataset | None = None,
                     val_set: Dataset | None = None, test_set: Dataset | None = None,
                     schema: Schema | None = None) -> dict:
    """Train a classifier into `config.out`; the best epoch is kept as config.json + model.safetensors.

    Data comes from `config.db` (train split, held-out validation, test split) or from the
    datasets passed in, which return (image float [3, S, S] in [0, 1], labels int64 [M]).
    Without `val_set`, a `val_fraction` share of `train_set` is held out.
    Returns a summary: steps, epochs, best validation and test metrics, seconds per epoch.
    """
    c = config.resolved()
    check_init(c.init, c.arch)
    init_dir = c.init if c.init not in ("scratch", "imagenet") else None
    with open_run(c.out, c.resume, inputs=(c.db, init_dir)):
        return _train(c, train_set, val_set, test_set, schema)


def _train(c: ClassifierConfig, train_set, val_set, test_set, schema) -> dict:
    folder = RunFolder(c.out)
    resuming = _resuming(c, folder)
    # 1. data
    if train_set is not None:
        splits = given_splits(train_set, val_set, test_set, schema, c.val_fraction, c.seed)
    elif c.db is None:
        raise UserError("no catalog DB given and no datasets passed")
    else:
        splits = catalog_splits(c.db, c.size, c.val_fraction, c.seed)
    if len(splits.train) == 0:
        raise UserError("no training items")
    # 2. model, optimiser and schedule, 3. their state, fresh or resumed
    run = ClassifierRun(c, splits, folder)
    if resuming:
        run.resume()
    with folder:
        run.start()
        # 4. epochs: train, validate, keep the best
        while run.epoch < c.epochs and not run.stopped:
            seconds = run.train_epoch()
            if seconds is None:
                break
            run.validate(seconds)
        if run.stopped:
            run.checkpoint()
        # 5. the chosen model on the test split
        test = run.test()
    return run.summary(test)


def _resuming(c: ClassifierConfig, folder: RunFolder) -> bool:
    """Whether this call continues the run in the folder; never overwrites one it was not told to
    resume, nor resumes one with another model or data order."""
    if folder.latest() is None:
        folder.trim_log(0, key="step")  # a kill before the first checkpoint left nothing to go on
        return False
    check_resume(folder, dataclasses.asdict(c), _RESUME_FIXED, paths=("db",))
    return True


class ClassifierRun:
    """One invocation of a classifier run: model, optimiser, schedule, position and best epoch."""

    def __init__(self, c: ClassifierConfig, splits: Splits, folder: RunFolder):
        self.c, self.splits, self.folder = c, splits, folder
        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.device = torch.device(c.device)
        self.model = AttributeClassifier(splits.schema, arch=c.arch, size=c.size,
                                         output_stride=c.output_stride, role=c.role, seed=c.seed)
        self.init_note = initialise(self.model, c.init)
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.weights = [w.to(self.device)
                        for w in class_weights(dataset_labels(splits.train), splits.schema)]
        self.n_train = len(splits.train)
        self.drop_last = self.n_train >= c.batch_size
        self.steps_per_epoch = self.n_train // c.batch_size if self.drop_last else 1
        self.optimizer, self.scheduler = _optimiser(self.model, c, c.epochs * self.steps_per_epoch)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best = {"mean_accuracy": -1.0}
        self.stopped = False
        self.epoch_seconds: list[float] = []
        self.eval_kw = dict(batch_size=2 * c.batch_size, workers=c.workers, device=self.device,
                            channels_last=c.channels_last)

    def resume(self) -> None:
        tensors, state = self.folder.resume()
        self.model.load_state_dict(tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self.best = state["batch_in_epoch"], state["best"]
        print(f"resuming {self.folder.out} from step {self.step} (epoch {self.epoch + 1}, "
              f"batch {self.batch_in_epoch})", file=sys.stderr)

    def start(self) -> None:
        """Write the run's configuration, open its log, and the data loader from this step on."""
        c = self.c
        self.folder.write_config({k: v for k, v in dataclasses.asdict(c).items()
                                  if k not in ("resume", "progress")})
        self.folder.open_log()
        self.sampler = EpochSampler(self.n_train, c.seed)
        self.loader = DataLoader(self.splits.train, batch_size=c.batch_size, sampler=self.sampler,
                                 drop_last=self.drop_last, num_workers=c.workers,
                                 persistent_workers=c.workers > 0,
                                 pin_memory=self.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(c.seed + self.step))
        self.stopped = c.max_steps is not None and self.step >= c.max_steps

    def train_epoch(self) -> float | None:
        """Train the rest of this epoch; its seconds, or None when max_steps stopped it midway."""
        c = self.c
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * c.batch_size)
        self.model.train()
        started = time.perf_counter()
        bar = progress_bar(total=self.steps_per_epoch, initial=self.batch_in_epoch,
                           file=sys.stderr, desc=f"epoch {self.epoch + 1}/{c.epochs}",
                           disable=not c.progress, leave=False)
        running, seen = 0.0, 0
        for x, y in self.loader if self.batch_in_epoch < self.steps_per_epoch else ():
            loss = self._step(x, y)
            if loss is not None:
                running, seen = running + loss, seen + 1
            bar.update(1)
            if self.step % c.log_every == 0 and seen:
                self._log_loss(running / seen)
                bar.set_postfix(loss=f"{running / seen:.3f}")
                running, seen = 0.0, 0
            if c.max_steps is not None and self.step >= c.max_steps:
                self.stopped = True
                break
            if self.step % c.checkpoint_every == 0:
                self.checkpoint()
        bar.close()
        if self.stopped and self.batch_in_epoch < self.steps_per_epoch:
            return None
        if seen:
            self._log_loss(running / seen)
        seconds = time.perf_counter() - started
        self.epoch_seconds.append(seconds)
        return seconds

    def _step(self, x, y) -> float | None:
        """One optimiser step; the batch's loss, None when it has no known label."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        losses = [F.cross_entropy(z, y[:, j], weight=self.weights[j], ignore_index=MISSING)
                  for j, z in enumerate(self.model(x)) if bool((y[:, j] != MISSING).any())]
        value = None
        if losses:
            loss = torch.stack(losses).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        return value

    def _log_loss(self, loss: float) -> None:
        self.folder.log({"event": "train", "step": self.step, "epoch": self.epoch + 1,
                         "loss": loss, "lr": self.optimizer.param_groups[0]["lr"]})

    def validate(self, seconds: float) -> None:
        """Score the epoch just trained on the validation set; keep its weights if they are best."""
        c, out, val = self.c, self.folder.out, self.splits.val
        metrics = (evaluate_classifier(self.model, val, **self.eval_kw) if val is not None else
                   {"accuracy": {}, "mean_accuracy": 0.0, "n": 0})
        self.folder.log({"event": "val", "step": self.step, "epoch": self.epoch + 1,
                         "seconds": seconds, **metrics})
        print(f"epoch {self.epoch + 1}/{c.epochs}: {seconds:.0f} s, validation "
              f"{accuracy_line(metrics['accuracy'])}", file=sys.stderr)
        self.epoch += 1
        self.batch_in_epoch = 0
        if metrics["mean_accuracy"] > self.best["mean_accuracy"] or not (out / WEIGHTS).is_file():
            self.best = {"epoch": self.epoch, "step": self.step, **metrics}
            self._save_model(None)
        self.checkpoint()

    def checkpoint(self) -> None:
        self.folder.checkpoint(self.step, self.model.state_dict(), {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(), "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best": self.best})

    def test(self) -> dict | None:
        """The chosen model's accuracy on the test split; None when the run stopped early."""
        out, test_set = self.folder.out, self.splits.test
        if self.stopped or test_set is None or not (out / WEIGHTS).is_file():
            return None
        self.model.load_state_dict(load_model_dir(out, kind="classifier")[1])
        metrics = evaluate_classifier(self.model, test_set, **self.eval_kw)
        self._save_model(metrics)
        self.folder.log({"event": "test", "step": self.best.get("step"), **metrics})
        return metrics

    def summary(self, test: dict | None) -> dict:
        return {"out": str(self.folder.out), "step": self.step, "epoch": self.epoch,
                "stopped": self.stopped, "steps_per_epoch": self.steps_per_epoch,
                "best": self.best, "test": test,
                "seconds_per_epoch": (float(np.mean(self.epoch_seconds)) if self.epoch_seconds
                                      else None)}

    def _save_model(self, test: dict | None) -> None:
        """The chosen weights and config.json beside them: the model, how it was trained, its
        metrics (with the digests of both, in the run folder)."""
        c, model, val, test_set = self.c, self.model, self.splits.val, self.splits.test
        save_model_files(self.folder.out, {
            "kind": "classifier", "role": c.role, "arch": c.arch, "size": c.size,
            "output_stride": c.output_stride, "schema": model.schema.to_dict(), "seed": c.seed,
            "embed_dim": model.embed_dim, "init": self.init_note,
            "metrics": {"validation": self.best, "test": test},
            "data": {"db": c.db, "train": self.n_train,
                     "validation": len(val) if val is not None else 0,
                     "test": len(test_set) if test_set is not None else 0,
                     "validation_source": "held-out train" if c.val_fraction > 0 else "test split"},
            "train": {k: v for k, v in dataclasses.asdict(c).items()
                      if k not in ("resume", "progress")},
        }, model.state_dict())


def _optimiser(model: AttributeClassifier, c: ClassifierConfig, total_steps: int):
    """AdamW or SGD, no weight decay on norms and biases; warm-up then cosine decay per step."""
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
    return optimizer, scheduler


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def export_classifier(run_dir: str | Path, out: str | Path) -> dict:
    """A run's best model -> a model directory in fp16 (how the shipped classifiers are made;
    `out` claimed by the caller: `export.export_run`)."""
    config, tensors = read_model(run_dir, "classifier")
    save_model_dir(out, config, tensors, half=True)
    return config
