"""Training AMGAN, its baselines (StarGAN, GANimation, SaGAN) and the paper's ablations.

Iterations are counted the way StarGAN's code counts them: every iteration is one D update, and G is
updated on every n_critic-th iteration (with that iteration's batch). 80k iterations in the paper's
sense are 80k D updates and 16k G updates. The learning rate decays linearly to 0 over the second
half of the iterations.

The manipulated attribute alternates round robin: over D updates by iteration number, over G updates
by G-update number, so both networks see every attribute equally whatever n_critic and M are.

Under `torchrun --nproc_per_node N` each process trains on its own shard of every epoch's order
with `batch_size` images (the global batch is N * batch_size); G, D_I and D_C are wrapped in
DistributedDataParallel (see `amgan_search.train.trainer` for how the updates keep DDP exact).
Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from amgan_search import checkpoint as ckpt
from amgan_search.device import barrier, init_distributed, teardown_distributed
from amgan_search.errors import UserError
from amgan_search.io import read_json
from amgan_search.registry import load_model, shipped_model
from amgan_search.schema import Schema
from amgan_search.train.batches import (DataOrder, ReferencePicker, batch_stream, group_keys,
                                        reference_images)
from amgan_search.train.config import AmganConfig
from amgan_search.train.loop import (LOG, RUN_CONFIG, RunFolder, check_resume, due,
                                     from_every_rank, open_run, progress_bar, rng_state,
                                     sample_grid, set_rng_state, tensorboard, training_seconds)
from amgan_search.train.trainer import AmganTrainer, lr_at
from amgan_search.train.validation import BEST, check_validation, picked_by, validate


# What a resumed run may change: where it runs and what it writes when, not what it computes. The
# schedule (`iters`: the learning rate's decay), the data, the networks, the losses and the seed
# are fixed at the start; a run planned for other values is another run. Validation reads the
# generator without changing it.
RESUME_FREE = ("out", "resume", "progress", "stop_at", "workers", "threads", "device", "bf16",
               "channels_last", "sample_every", "ckpt_every", "log_every", "val_scenes",
               "val_scene_attributes")
RESUME_FIXED = tuple(f.name for f in dataclasses.fields(AmganConfig) if f.name not in RESUME_FREE)


def train_amgan(config: AmganConfig, *, dataset=None, schema: Schema | None = None,
                classifier=None) -> Path:
    """Train one method; returns the output directory (model.safetensors + config.json).

    `dataset`, `schema` and `classifier` may be passed in already built (tests, notebooks); by
    default they come from `config.db` and `config.classifier`. The output folder is claimed and
    locked while the run writes it (`loop.open_run`): an existing run is continued only with
    `config.resume`.
    """
    with amgan_run(config, dataset=dataset, schema=schema, classifier=classifier) as run:
        return run.train()


@contextmanager
def amgan_run(config: AmganConfig, *, dataset=None, schema: Schema | None = None,
              classifier=None) -> Iterator["AmganRun"]:
    """The prepared run of this process: under torchrun, inside the process group (left on exit)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world, device, started = init_distributed(config.device)
    try:
        with open_run(config.out, config.resume, inputs=(config.db, config.classifier),
                      writes=rank == 0):
            yield AmganRun(config, rank, world, device, dataset=dataset, schema=schema,
                           classifier=classifier)
    finally:
        teardown_distributed(started)


class AmganRun:
    """One invocation of a run on one rank: its data, trainer, random streams and run folder."""

    def __init__(self, config: AmganConfig, rank: int = 0, world: int = 1,
                 device: str | torch.device = "cpu", *, dataset=None,
                 schema: Schema | None = None, classifier=None):
        self.config, self.rank, self.world, self.device = config, rank, world, torch.device(device)
        self.folder = RunFolder(config.out, writes=rank == 0)
        self.dataset = dataset if dataset is not None else _open_dataset(config)
        self.schema = schema or self.dataset.schema
        classifier = _frozen_classifier(config, classifier, self.device)
        # Same initial weights on every rank (DDP also broadcasts rank 0's), then per-rank streams.
        torch.manual_seed(config.seed)
        self.trainer = AmganTrainer(config, self.schema, classifier, self.device, ddp=world > 1)
        torch.manual_seed(config.seed * 1000 + rank)
        random.seed(config.seed * 1000 + rank)
        self.np_rng = np.random.default_rng([config.seed, rank])
        self.labels = np.asarray(self.dataset.labels, dtype=np.int64)
        self.picker = (ReferencePicker(self.labels, group_keys(self.dataset))
                       if config.use_perceptual else None)
        self.order = DataOrder(len(self.dataset), config.batch_size, config.seed, rank, world)
        if config.val_scenes:
            check_validation(self.schema, config.val_scene_attributes)
        if config.resume:
            check_resume(self.folder, dataclasses.asdict(config), RESUME_FIXED,
                         paths=("db", "classifier"))
        self.start = self._resume() if config.resume else self._fresh()
        self.best_score = self._best_score()
        self.folder.write_config(dataclasses.asdict(config))
        self.x_sample, self.y_sample = self._sample_batch()

    def train(self) -> Path:
        """StarGAN's Solver.train: per iteration train D, every n_critic-th train G; log, sample,
        save; at the end, the generator as a model directory."""
        cfg, trainer, M, end = self.config, self.trainer, self.schema.n_attributes, self.config.end
        self.writer = tensorboard(self.folder.out) if self.folder.writes else None
        stream = batch_stream(self.dataset, self.order, cfg.workers)
        self.bar = progress_bar(total=cfg.iters, initial=self.start, desc=cfg.method,
                                disable=not self.folder.writes or not cfg.progress)
        logs: dict[str, float] = {}
        self.t0 = time.time()
        with self.folder:
            self.folder.open_log()
            for it in range(self.start, end):
                # 1. Preprocess: this iteration's batch and learning rate.
                x, y, idx = next(stream)
                lr = lr_at(cfg, it)
                trainer.set_lr(lr)
                # 2. Train the critics; the manipulated attribute goes round robin over D updates.
                logs.update(trainer.d_step(x, y, it % M))
                # 3. Train the generator every n_critic-th iteration, round robin over G updates.
                if (it + 1) % cfg.n_critic == 0:
                    logs.update(trainer.g_step(x, y, (it // cfg.n_critic) % M,
                                               self._reference(idx.numpy())))
                step = it + 1
                self.bar.update(1)
                # 4. Log, 5. sample, 6. save.
                if due(step, cfg.log_every, end):
                    self._log(step, lr, logs)
                if due(step, cfg.sample_every, end):
                    self._sample(step)
                if due(step, cfg.ckpt_every, end):
                    self._checkpoint(step)
            self.bar.close()
            if self.writer is not None:
                self.writer.close()
            return self._finish()

    # -- preparing ----------------------------------------------------------------------------

    def _resume(self) -> int:
        """Load the latest checkpoint into the trainer, data order and random streams; its step."""
        cfg = self.config
        tensors, state = self.folder.resume()
        self.trainer.load_tensors(tensors)
        self.trainer.opt_g.load_state_dict(state["opt_g"])
        self.trainer.opt_d.load_state_dict(state["opt_d"])
        start = int(state["step"])
        self.order.epoch, self.order.pos = state["order"]["epoch"], state["order"]["pos"]
        rngs = state["rng"]
        if len(rngs) == self.world:
            set_rng_state(rngs[self.rank], self.np_rng)
        else:  # another world size: the data order resumes exactly, the random draws do not
            torch.manual_seed(cfg.seed * 1000 + self.rank + start)
        self.folder.trim_log(start)
        if start >= cfg.end:
            raise UserError(f"{self.folder.out}: already at iteration {start}; nothing to do "
                            f"before iteration {cfg.end}")
        return start

    def _fresh(self) -> int:
        """A fresh start: a log a kill before the first checkpoint left describes nothing now."""
        self.folder.trim_log(0)
        return 0

    def _best_score(self) -> float:
        """The validation score of the run's best/ model so far (-1: none yet)."""
        if not self.config.val_scenes:
            return -1.0
        return float(picked_by(self.folder.out).get("score", -1.0))

    def _sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed batch for the sample grids, the same every run of this seed."""
        idx = np.random.default_rng([self.config.seed, 99]).permutation(len(self.dataset))[:8]
        x = torch.stack([self.dataset[int(i)][0] for i in idx]).to(self.device)
        return x, torch.as_tensor(self.labels[idx])

    def _reference(self, source: np.ndarray):
        """L_p's `reference(trg, attribute) -> (images, mask)` for a batch of the items `source`."""
        if self.picker is None:
            return None

        def reference(trg, attribute):
            idx = self.picker.pick(trg.numpy(), attribute, self.np_rng, source=source)
            return reference_images(self.dataset, idx, self.config.size)

        return reference

    # -- log, save, finish ---------------------------------------------------------------------

    def _log(self, step: int, lr: float, logs: dict[str, float]) -> None:
        if not self.folder.writes:
            return
        # s_per_iter averages this invocation's iterations, which began after `since`
        self.folder.log({"iter": step, "since": self.start, "lr": lr,
                         "s_per_iter": (time.time() - self.t0) / (step - self.start),
                         **{k: round(v, 5) for k, v in logs.items()}})
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(k, v, step)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()
                              if k in ("D/loss", "G/loss", "G/cls", "G/att")})

    def _sample(self, step: int) -> None:
        if self.folder.writes:
            self.folder.save_samples(step, sample_grid(self.trainer, self.x_sample, self.y_sample))

    def _checkpoint(self, step: int) -> None:
        rngs = from_every_rank(rng_state(self.np_rng), self.world)
        trainer = self.trainer
        self.folder.checkpoint(step, trainer.tensors(), {
            "opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict(),
            "order": self.order.state(), "rng": rngs, "world": self.world,
        })
        if self.config.val_scenes and self.folder.writes:
            self._validate(step)

    def _validate(self, step: int) -> None:
        """Grade this checkpoint against the truth (`train.validation`); log the record and, when
        it scores above every earlier one, keep it as the run's best/ model."""
        cfg = self.config
        record = validate(self.trainer.net, self.schema, cfg.size, self.trainer.classifier,
                          cfg.method, cfg.val_scenes, cfg.val_scene_attributes)
        self.folder.log({"iter": step, "event": "validation", **record})
        if record["score"] <= self.best_score:
            return
        self.best_score = record["score"]
        model = model_config(cfg, self.schema, step, self.folder.training_seconds(step))
        model["picked_by"] = {"step": step, "by": "train.validation.truth_score", **record}
        ckpt.save_model_dir(self.folder.out / BEST, model, _generator(self.trainer.tensors()),
                            half=True)

    def _finish(self) -> Path:
        out, end = self.folder.out, self.config.end
        if self.folder.writes:
            ckpt.save_model_files(out, model_config(self.config, self.schema, end,
                                                    self.folder.training_seconds(end)),
                                  _generator(self.trainer.tensors()), half=True)
        barrier()
        return out


def _open_dataset(config: AmganConfig):
    if not config.db:
        raise UserError("no catalog DB to train on (the config's db is empty)")
    from amgan_search.dataset import CatalogImages

    return CatalogImages(config.db, split=config.split, size=config.size, augment=config.augment)


def _frozen_classifier(config: AmganConfig, classifier, device: torch.device):
    """The CNN+CAM network given, else the config's (or the shipped one) if the method uses one."""
    if classifier is None and config.needs_classifier:
        classifier = load_model(config.classifier, "classifier", device=str(device))
    return classifier.to(device).eval() if classifier is not None else None


def _generator(tensors: dict) -> dict:
    """The generator's tensors (what a model directory ships) out of the trainer's."""
    return {k: v for k, v in tensors.items() if k.startswith("net.")}


# -- model directories ------------------------------------------------------------------------

def _classifier_record(config: AmganConfig) -> dict | None:
    """The CNN+CAM network given to the run (its path as given) or, when none was, the shipped one
    it trained against (by name); None for a method that needs none and was given none."""
    if config.classifier is not None:
        path, named = Path(config.classifier), str(config.classifier)  # as the user gave it
    elif not config.needs_classifier:
        return None
    else:
        try:
            path, named = shipped_model("classifier-cam"), "classifier-cam"  # its name, no folder
        except UserError:
            return {"path": None, "sha256": None}
    weights = path / ckpt.WEIGHTS
    return {"path": named, "sha256": ckpt.weights_sha256(path) if weights.is_file() else None}


def model_config(config: AmganConfig, schema: Schema, iterations: int, wall_s: float) -> dict:
    """config.json of a trained model: what the manipulator needs to rebuild it."""
    return {
        "kind": "amgan",
        "method": config.method,
        "attention": config.attention,
        "schema": schema.to_dict(),
        "size": config.size,
        "c_dim": schema.condition_dim,
        "conv_dim": config.g_conv_dim,
        "repeat_num": config.g_repeat_num,
        "att_conv_dim": config.att_conv_dim,
        "upsample": config.g_upsample,
        "d_conv_dim": config.d_conv_dim,
        "d_repeat_num": config.d_repeat_num,
        "dc_repeat_num": config.d_repeat_num - 2 if config.use_dc else None,
        "classifier": _classifier_record(config),
        "iterations": iterations,
        "iterations_counted_as": "D updates; G updated every n_critic",
        "wall_time_s": round(wall_s, 1),
        "bf16": config.use_bf16,
        "train_config": dataclasses.asdict(config),
    }


def export_model(run_dir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """A run's checkpoint (the latest, or `step`) -> a model directory the manipulator loads
    (`out` claimed by the caller: `export.export_run`).

    A long run ships snapshots while it goes on: the generator's weights in fp16 and the config
    with the iterations actually done, so the model card can say exactly what was trained.
    """
    run_dir = Path(run_dir)
    if step is None:
        path = ckpt.latest_checkpoint(run_dir)
        if path is None:
            raise UserError(f"{run_dir}: no checkpoint to export")
    else:
        path = run_dir / "checkpoints" / f"step-{step:07d}"
        if not (path / ckpt.WEIGHTS).is_file():
            raise UserError(f"{path}: no such checkpoint")
    fields = {f.name for f in dataclasses.fields(AmganConfig)}
    saved = read_json(run_dir / RUN_CONFIG)
    if not isinstance(saved, dict):
        raise UserError(f"{run_dir / RUN_CONFIG}: not a JSON object")
    config = AmganConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                            for k, v in saved.items() if k in fields})
    tensors, state = ckpt.load_checkpoint(path)
    if not _generator(tensors):
        raise UserError(f"{path}: holds no generator (not a checkpoint of an AMGAN run)")
    done = int(state["step"])
    wall = training_seconds(run_dir / LOG, done)
    schema = Schema.from_dict(_schema_of_run(config))
    model = model_config(config, schema, done, wall)
    model["exported_from"] = {"run": str(run_dir), "checkpoint": path.name,
                              "planned_iterations": config.iters}
    ckpt.save_model_dir(out, model, _generator(tensors), half=True)
    return model


def export_best(run_dir: str | Path, out: str | Path) -> dict:
    """The model folder a run's validation kept (best/, `train.validation`) -> `out`, its files
    checked on the way (`out` claimed by the caller: `export.export_run`)."""
    best = Path(run_dir) / BEST
    if not (best / ckpt.WEIGHTS).is_file():
        raise UserError(f"{run_dir}: no best checkpoint (train with --val-scenes to grade "
                        "checkpoints against the truth)")
    model, tensors = ckpt.load_model_dir(best, "amgan")
    model["exported_from"] = {"run": str(run_dir), "checkpoint": BEST,
                              "planned_iterations": (model.get("train_config") or {}).get("iters")}
    ckpt.save_model_dir(out, model, tensors, half=True)
    return model


def _schema_of_run(config: AmganConfig) -> dict:
    from amgan_search.catalog import Catalog

    return Catalog.open(config.db).schema.to_dict()
