"""Training the disentangled attribute embedding with its attribute memory (`nets.adde`, ADDE) on a
catalog DB, in ADDE's two stages:

1. the encoder: each attribute's projection and the classifier on its chunk, by per-chunk
   classification (`encoder_epochs`);
2. the memory is initialised with the mean chunk of the training images carrying each value,
   then projections and memory are trained together with every loss (`epochs`): per-chunk
   classification, label triplets (per chunk and on the whole embedding), the manipulation
   triplet (a query manipulated toward a target closer to an image that has the target's labels
   than to one that has not), the memory's consistency with the encoder and its block-diagonal L1.

Choices ADDE does not make, ours, each in the docs:
- The CNN is the classifier `train classifier` made (`encoder`, by default the shipped
  classifier-cam), frozen: the trunk's pooled features of every training image are computed once,
  as it is and mirrored (`views`), and kept in the run folder, so an epoch is a pass of small
  layers over a table and the whole stage takes minutes on a CPU.
- Negatives of the manipulation triplet: half the time an image with the query's own labels (what
  the unmanipulated query would find), else any image without the target's labels.
- Positives of the whole-embedding and manipulation triplets come from the whole training set
  (a batch seldom holds an image of every label combination), through the label groups.
- The rest chunk is not trained (see `nets.adde`); its weight is a setting (`rest_weight`).

A step is an epoch. A checkpoint is written after every epoch and all are kept (each well under a
megabyte), so `train export RUN --step N` exports any of them; the one at `encoder_epochs` holds the
initialised memory: ADDE without its triplet stage (the ablation). `--resume` continues from the
latest, with the configuration it was started with (`RESULT_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from amgan_search.losses import (classification_loss, memory_consistency, off_block_l1,
                                 triplet_loss)
from amgan_search.nets.adde import RESTS, DisentangledEncoder
from amgan_search.schema import MISSING, Schema
from amgan_search.train.checks import SEED_MAX, choice, number, whole
from amgan_search.train.loop import (RunFolder, check_resume, open_run, rng_state,
                                     set_rng_state)

TRAINER = "adde"  # train_config.json's "trainer"
FEATURES = "features"  # the run's folder of the trunk's features: features.safetensors, SHA256SUMS
FEATURES_FILE = "features.safetensors"
# Fields that change what a run computes: a resume must keep them (the rest only say how it runs).
RESULT_FIELDS = ("db", "encoder", "split", "attributes", "chunk_dim", "hidden", "rest",
                 "rest_weight", "views", "encoder_epochs", "epochs", "batch_size", "lr", "margin",
                 "lambda_cls", "lambda_triplet", "lambda_manip", "lambda_consistency",
                 "lambda_l1", "val_fraction", "seed")


@dataclass
class AddeConfig:
    """Everything a run needs; written next to its outputs as train_config.json."""

    db: str | None = None
    out: str = "runs/adde"
    # the classifier folder whose pooled features are the input; None: the shipped classifier-cam
    encoder: str | None = None
    split: str = "train"
    # the labelled attributes to learn chunks for; None: every attribute of the DB
    attributes: tuple[str, ...] | None = None
    chunk_dim: int = 64
    hidden: int = 256
    rest: str = "residual"          # nets.adde.RESTS
    # The rest chunk's weight against 1 for each attribute chunk. Our choice: it orders the items
    # that match the target's labels without outranking a label (a chunk's cosine to its own value
    # is near 1, to another value near 0; the rest's cosines between catalog images span about
    # 0.5): 0.5 weighs that span at 0.125 of an attribute's.
    rest_weight: float = 0.5
    views: int = 2                  # 1: the images as they are; 2: also mirrored
    encoder_epochs: int = 10
    epochs: int = 30                # the stage with the memory and the triplets
    batch_size: int = 256
    lr: float = 1e-3
    margin: float = 0.2
    lambda_cls: float = 1.0
    lambda_triplet: float = 1.0
    lambda_manip: float = 1.0
    lambda_consistency: float = 1.0
    lambda_l1: float = 1.0
    val_fraction: float = 0.1       # a held-out share of the split, graded in the log
    seed: int = 0
    batch_features: int = 128       # images per trunk forward while features are computed
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        whole(self, ("chunk_dim", "hidden", "batch_size", "batch_features"), 1)
        whole(self, ("encoder_epochs", "epochs"), 0)
        whole(self, ("views",), 1, 2)
        whole(self, ("seed",), 0, SEED_MAX)
        choice(self, "rest", RESTS, "rest chunk")
        number(self, ("lr",), 0, above=True)
        number(self, ("margin", "rest_weight", "lambda_cls", "lambda_triplet", "lambda_manip",
                      "lambda_consistency", "lambda_l1"), 0)
        number(self, ("val_fraction",), 0, 1, below=True)
        if self.encoder_epochs + self.epochs == 0:
            raise UserError("nothing to train: encoder_epochs and epochs are both 0")

    def to_dict(self) -> dict:
        """train_config.json: every field, and which trainer wrote it (what `train export` reads
        to export a run still in progress)."""
        d = dataclasses.asdict(self)
        d["attributes"] = list(self.attributes) if self.attributes is not None else None
        return {"trainer": TRAINER, **d}


# -- data: the trunk's features of every training image, computed once -----------------------------

def load_trunk(encoder: str | None, device: str = "cpu"):
    """(the classifier whose pooled features are the input, its folder, its weights' sha256)."""
    from amgan_search.checkpoint import weights_sha256
    from amgan_search.registry import load_model, model_dir

    folder = model_dir(encoder, "classifier")
    return load_model(folder, "classifier", device), folder, weights_sha256(folder)


def compute_features(trunk, db: str, split: str, views: int, batch: int, device: str,
                     progress: bool) -> np.ndarray:
    """Pooled trunk features [views, n, C] of a split's images (view 1: mirrored)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from amgan_search.dataset import CatalogImages

    dataset = CatalogImages(db, split=split, size=trunk.size)
    out = np.empty((views, len(dataset), trunk.embed_dim), dtype=np.float32)
    row = 0
    with torch.inference_mode(), tqdm(total=len(dataset) * views, desc="trunk features",
                                      unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for x, _ in DataLoader(dataset, batch_size=batch, num_workers=0):
            x = x.to(device)
            for v in range(views):
                out[v, row:row + len(x)] = trunk.pooled(x if v == 0 else x.flip(-1)).float().cpu()
                bar.update(len(x))
            row += len(x)
    return out


def features_provenance(db: str, split: str, views: int, trunk_sha: str) -> dict[str, str]:
    """What the cached features were computed from: the trunk, the catalog DB (the checksum its
    header keeps, else the file's sha256), the split and the views."""
    from amgan_search import db_checksum
    from amgan_search.integrity import file_sha256

    stored = db_checksum.stored(db)
    return {"trunk_sha256": trunk_sha, "db": stored.hex() if stored else file_sha256(db),
            "split": str(split), "views": str(views)}


def cached_features(run: Path, trunk, trunk_sha: str, config: AddeConfig) -> np.ndarray:
    """The features kept in the run folder (checked against their sums and what they were
    computed from), or computed and written there."""
    from safetensors import safe_open

    from amgan_search.integrity import verify, write_sums
    from amgan_search.io import atomic_dir

    folder = run / FEATURES
    wanted = features_provenance(config.db, config.split, config.views, trunk_sha)
    if (folder / FEATURES_FILE).is_file():
        verify(folder, [FEATURES_FILE], required=True)
        with safe_open(str(folder / FEATURES_FILE), framework="pt") as f:
            meta = f.metadata() or {}
            differ = [k for k, v in wanted.items() if meta.get(k) != v]
            if differ:
                raise UserError(f"{folder}: computed from another {', '.join(differ)}; train "
                                "another run")
            return f.get_tensor("features").numpy()
    features = compute_features(trunk, config.db, config.split, config.views,
                                config.batch_features, config.device, config.progress)
    with atomic_dir(folder) as tmp:
        ckpt.save_weights(tmp / FEATURES_FILE, {"features": torch.from_numpy(features)},
                          metadata=wanted)
        write_sums(tmp, [FEATURES_FILE])
    return features


class LabelGroups:
    """The training rows of every label combination (the labelled attributes, all known), to draw
    positives and negatives of the triplets from the whole training set."""

    def __init__(self, labels: np.ndarray):
        self.labels = labels
        keys = [tuple(r) if MISSING not in r else None for r in labels.tolist()]
        self.rows: dict[tuple, np.ndarray] = {}
        for i, key in enumerate(keys):
            if key is not None:
                self.rows.setdefault(key, []).append(i)
        self.rows = {k: np.asarray(v) for k, v in self.rows.items()}

    def draw(self, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random training row with each target's labels, -1 where none has them."""
        out = np.full(len(targets), -1, dtype=np.int64)
        for i, key in enumerate(map(tuple, targets.tolist())):
            rows = self.rows.get(key)
            if rows is not None:
                out[i] = rows[rng.integers(len(rows))]
        return out

    def draw_other(self, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random training row whose labels differ from each target's."""
        out = rng.integers(len(self.labels), size=len(targets))
        same = (self.labels[out] == targets).all(axis=1)
        while same.any():  # a few redraws: most rows differ from a given target
            out[same] = rng.integers(len(self.labels), size=int(same.sum()))
            same = (self.labels[out] == targets).all(axis=1)
        return out


# -- the losses of one batch -------------------------------------------------------------------------

def in_batch_partner(values: np.ndarray, same: bool, rng: np.random.Generator) -> np.ndarray:
    """For each row, another row of the batch with the same value (`same`) or a different one
    (known values only); -1 where there is none."""
    known = values != MISSING
    match = (values[:, None] == values[None, :]) if same else (values[:, None] != values[None, :])
    match &= known[:, None] & known[None, :]
    np.fill_diagonal(match, False)
    scores = np.where(match, rng.random(match.shape), -1.0)
    pick = scores.argmax(axis=1)
    return np.where(scores.max(axis=1) >= 0, pick, -1)


def batch_losses(enc: DisentangledEncoder, pooled_all: torch.Tensor, rows: np.ndarray,
                 views: np.ndarray, labels: np.ndarray, groups: LabelGroups, config: AddeConfig,
                 stage: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Every loss of one batch (`stage` 1: classification alone)."""
    y = labels[rows]
    f = enc.from_pooled(pooled_all[views, rows], torch.from_numpy(y))
    losses = {"cls": classification_loss(enc.logits(f), torch.from_numpy(y))}
    if stage == 1:
        return losses
    m = len(enc.schema.attributes)
    # label triplets, per chunk: a row of the batch with the same value, one with another
    chunk_terms = []
    for a in range(m):
        pos, neg = in_batch_partner(y[:, a], True, rng), in_batch_partner(y[:, a], False, rng)
        keep = torch.from_numpy((pos >= 0) & (neg >= 0))
        u = f[:, enc.block(a)]
        chunk_terms.append(triplet_loss(u, u[pos.clip(0)], u[neg.clip(0)], config.margin, keep))
    whole_pos, whole_neg = groups.draw(y, rng), groups.draw_other(y, rng)
    keep = torch.from_numpy(whole_pos >= 0)
    other_views = rng.integers(config.views, size=len(rows))
    f_pos = enc.from_pooled(pooled_all[other_views, whole_pos.clip(0)],
                            torch.from_numpy(labels[whole_pos.clip(0)]))
    f_neg = enc.from_pooled(pooled_all[other_views, whole_neg], torch.from_numpy(labels[whole_neg]))
    losses["triplet"] = torch.stack(chunk_terms).sum() + triplet_loss(f, f_pos, f_neg, config.margin, keep)
    losses["manip"] = manipulation_triplet(enc, f, pooled_all, y, groups, config, rng)
    proto = [enc.memory.rows(a, torch.from_numpy(y[:, a].clip(0)))[:, enc.block(a)]
             for a in range(m)]
    known = [torch.from_numpy(y[:, a] != MISSING) for a in range(m)]
    losses["consistency"] = torch.stack([
        memory_consistency(f[k][:, enc.block(a)], p[k]) if k.any() else f.new_zeros(())
        for a, (p, k) in enumerate(zip(proto, known))]).sum()
    losses["l1"] = off_block_l1(enc.memory.weight, enc.off_block())
    return losses


def manipulation_triplet(enc: DisentangledEncoder, f: torch.Tensor, pooled_all: torch.Tensor,
                         y: np.ndarray, groups: LabelGroups, config: AddeConfig,
                         rng: np.random.Generator) -> torch.Tensor:
    """Each row manipulated toward a random other value of a random attribute: closer to an
    image with the target's labels than to one without (half the time one with the row's own)."""
    n, m = y.shape
    attr = rng.integers(m, size=n)
    counts = np.asarray([len(a.values) for a in enc.schema.attributes])
    new = (y[np.arange(n), attr] + 1 + rng.integers(counts[attr] - 1)) % counts[attr]
    targets = y.copy()
    targets[np.arange(n), attr] = new
    known = (y[np.arange(n), attr] != MISSING)
    f_star = enc.manipulate(f, torch.from_numpy(attr), torch.from_numpy(new),
                            old=torch.from_numpy(y[np.arange(n), attr].clip(0)))
    pos = groups.draw(targets, rng)
    own = groups.draw(y, rng)
    neg = np.where((rng.random(n) < 0.5) & (own >= 0), own, groups.draw_other(targets, rng))
    views = rng.integers(config.views, size=n)
    f_pos = enc.from_pooled(pooled_all[views, pos.clip(0)], torch.from_numpy(groups.labels[pos.clip(0)]))
    f_neg = enc.from_pooled(pooled_all[views, neg], torch.from_numpy(groups.labels[neg]))
    return triplet_loss(f_star, f_pos, f_neg, config.margin, torch.from_numpy((pos >= 0) & known))


# -- the run ----------------------------------------------------------------------------------------

def _sub_schema(schema: Schema, names) -> tuple[Schema, list[int]]:
    """The attributes to learn chunks for (all of the DB's when None) and their DB positions."""
    if names is None:
        return schema, list(range(len(schema.attributes)))
    positions = [schema.position(n) for n in names]
    return Schema([schema.attributes[p] for p in positions]), positions


def init_memory(enc: DisentangledEncoder, pooled: torch.Tensor, labels: np.ndarray) -> None:
    """Each prototype: the mean chunk (weighted, in its own block; zeros elsewhere) of the
    training images carrying its value (ADDE's initialisation)."""
    with torch.no_grad():
        f = enc.from_pooled(pooled, torch.as_tensor(labels))
        enc.memory.weight.zero_()
        for a, attr in enumerate(enc.schema.attributes):
            b = enc.block(a)
            for v in range(len(attr.values)):
                rows = torch.from_numpy(labels[:, a] == v)
                if rows.any():
                    enc.memory.weight[int(enc.memory.offsets[a]) + v, b] = f[rows][:, b].mean(0)


def heads_state(enc: DisentangledEncoder) -> dict:
    """What a run saves: every tensor but the frozen trunk's."""
    return {k: v for k, v in enc.state_dict().items() if not k.startswith("trunk.")}


@torch.no_grad()
def validate(enc: DisentangledEncoder, pooled: torch.Tensor, labels: np.ndarray, seed: int,
             memory: bool) -> dict:
    """On the held-out rows: each chunk's accuracy and (with the memory) the share of
    manipulations (one random other value of one random attribute per row) whose target labels
    some other held-out image among the top 10 has."""
    if len(labels) < 2:
        return {}
    f = enc.from_pooled(pooled)
    out = {f"acc_{a.name}": float((enc.predict(f)[:, j].numpy() == labels[:, j])[labels[:, j] != MISSING].mean())
           for j, a in enumerate(enc.schema.attributes)}
    if not memory:
        return out
    rng = np.random.default_rng(seed)
    n, m = labels.shape
    attr = rng.integers(m, size=n)
    counts = np.asarray([len(a.values) for a in enc.schema.attributes])
    new = (labels[np.arange(n), attr].clip(0) + 1 + rng.integers(counts[attr] - 1)) % counts[attr]
    targets = labels.copy()
    targets[np.arange(n), attr] = new
    q = enc.manipulate(f, torch.from_numpy(attr), torch.from_numpy(new),
                       old=torch.from_numpy(labels[np.arange(n), attr].clip(0)))
    scores = q @ f.T
    scores.fill_diagonal_(-float("inf"))
    top = scores.topk(min(10, n - 1), dim=1).indices.numpy()
    hit = (labels[top] == targets[:, None, :]).all(axis=2).any(axis=1)
    has = np.asarray([((labels == t).all(axis=1) & (np.arange(n) != i)).any()
                      for i, t in enumerate(targets)])
    out["manip_top10"] = float(hit[has].mean()) if has.any() else None
    return out


def train_adde(config: AddeConfig) -> dict:
    """Train (or resume) a run; returns the final model's config.json contents."""
    from amgan_search.catalog import Catalog
    from amgan_search.train.classifier_data import holdout

    config.check()
    if config.db is None or not Path(config.db).is_file():
        raise UserError(f"{config.db}: no such catalog DB")
    torch.manual_seed(config.seed)
    out = Path(config.out)
    with open_run(out, config.resume, inputs=[config.db, config.encoder]), RunFolder(out) as run:
        if config.resume:
            check_resume(run, config.to_dict(), RESULT_FIELDS, paths=("db", "encoder"))
        run.write_config(config.to_dict())
        trunk, trunk_dir, trunk_sha = load_trunk(config.encoder, config.device)
        catalog = Catalog.open(config.db)
        schema, positions = _sub_schema(catalog.schema, config.attributes)
        labels_all = catalog.labels(catalog.items(config.split))[:, positions]
        if len(labels_all) == 0:
            raise UserError(f"{config.db}: no items in split {config.split!r}")
        features = torch.from_numpy(cached_features(out, trunk, trunk_sha, config))
        fit, held = holdout(len(labels_all), config.val_fraction, config.seed)
        fit, held = np.asarray(fit), np.asarray(held, dtype=np.int64)
        labels = labels_all[fit]
        pooled_fit, pooled_held = features[:, fit], features[0, held]
        enc = DisentangledEncoder(trunk, schema, config.chunk_dim, config.hidden, config.rest,
                                  config.rest_weight).to(config.device)
        params = [p for n, p in enc.named_parameters() if not n.startswith("trunk.")]
        optimiser = torch.optim.Adam(params, lr=config.lr)
        groups = LabelGroups(labels)
        enc.set_rest_means(pooled_fit[0], torch.from_numpy(labels))
        rng = np.random.default_rng([config.seed, 0xADDE])
        start = 0
        if config.resume and run.latest() is not None:
            tensors, state = run.resume()
            enc.load_state_dict({**enc.state_dict(), **tensors})
            optimiser.load_state_dict(state["optimiser"])
            set_rng_state(state["rng"], rng)
            start = int(state["step"])
            run.trim_log(start, key="step")
        run.open_log()
        total = config.encoder_epochs + config.epochs
        if start == 0 and config.encoder_epochs == 0:
            init_memory(enc, pooled_fit[0], labels)
        for epoch in range(start, total):
            stage = 1 if epoch < config.encoder_epochs else 2
            began = time.perf_counter()
            sums = run_epoch(enc, optimiser, pooled_fit, labels, groups, config, stage, rng)
            step = epoch + 1
            if step == config.encoder_epochs:
                init_memory(enc, pooled_fit[0], labels)
            enc.eval()
            record = {"event": "train", "step": step, "stage": stage, **sums,
                      **validate(enc, pooled_held, labels_all[held], config.seed,
                                 memory=step >= config.encoder_epochs),
                      "seconds": round(time.perf_counter() - began, 2)}
            run.log(record)
            if config.progress:
                print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in record.items() if k != "event"), flush=True)
            run.checkpoint(step, heads_state(enc), {
                "optimiser": optimiser.state_dict(), "rng": rng_state(rng),
                "model_config": model_config(enc, config, trunk_sha, step)}, keep=0)
        final = model_config(enc, config, trunk_sha, total)
        ckpt.save_model_files(out, final, heads_state(enc))
        return final


def run_epoch(enc, optimiser, pooled_fit, labels, groups, config: AddeConfig, stage: int,
              rng: np.random.Generator) -> dict:
    """One pass over the training rows in batches; the mean of each loss."""
    enc.train()
    enc.trunk.eval()
    order = rng.permutation(len(labels))
    sums: dict[str, float] = {}
    weights = {"cls": config.lambda_cls, "triplet": config.lambda_triplet,
               "manip": config.lambda_manip, "consistency": config.lambda_consistency,
               "l1": config.lambda_l1}
    batches = 0
    for start in range(0, len(order), config.batch_size):
        rows = order[start:start + config.batch_size]
        if len(rows) < 2:
            continue
        views = rng.integers(config.views, size=len(rows))
        losses = batch_losses(enc, pooled_fit, rows, views, labels, groups, config, stage, rng)
        loss = sum(weights[k] * v for k, v in losses.items())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        batches += 1
    return {k: v / max(batches, 1) for k, v in sums.items()}


def model_config(enc: DisentangledEncoder, config: AddeConfig, trunk_sha: str, step: int) -> dict:
    """config.json of a model of this run at `step` epochs."""
    return {"kind": "adde", "schema": enc.schema.to_dict(), "size": enc.size,
            "chunk_dim": enc.chunk_dim, "hidden": int(enc.projections[0][0].out_features),
            "rest": enc.rest, "embed_dim": enc.embed_dim,
            "trunk": {"path": config.encoder, "sha256": trunk_sha},
            "epochs": step,
            "memory": "initialised" if step <= config.encoder_epochs else "trained",
            "train_config": config.to_dict()}


def export_adde(run_dir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """The run's model (or the checkpoint of epoch `step`, which holds its config) as an fp16
    model directory; the caller has claimed `out`."""
    from amgan_search.checkpoint import checkpoint_steps, load_checkpoint, load_model_dir
    from amgan_search.checkpoint import save_model_dir

    run_dir = Path(run_dir)
    if step is None:
        if not (run_dir / ckpt.WEIGHTS).is_file():
            raise UserError(f"{run_dir}: the run has no model yet; export a checkpoint with --step")
        config, tensors = load_model_dir(run_dir, kind="adde")
    else:
        found = dict(checkpoint_steps(run_dir / "checkpoints"))
        if step not in found:
            raise UserError(f"{run_dir}: no checkpoint of epoch {step}; it has "
                            f"{', '.join(map(str, sorted(found))) or 'none'}")
        tensors, state = load_checkpoint(found[step])
        config = state["model_config"]
    config = {**config, "exported_from": {"run": str(run_dir), "epochs": config["epochs"]}}
    save_model_dir(out, config, tensors, half=True)
    return config
