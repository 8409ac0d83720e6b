"""Training AMGAN, its baselines (StarGAN, GANimation, SaGAN) and the paper's ablations.

Iterations are counted the way StarGAN's code counts them: every iteration is one D update, and G is
updated on every n_critic-th iteration (with that iteration's batch). 80k iterations in the paper's
sense are 80k D updates and 16k G updates. The learning rate decays linearly to 0 over the second
half of the iterations.

The manipulated attribute alternates round robin: over D updates by iteration number, over G updates
by G-update number, so both networks see every attribute equally whatever n_critic and M are.

Under `torchrun --nproc_per_node N` each process trains on its own shard of every epoch's order
with `batch_size` images (the global batch is N * batch_size). G, D_I and D_C are wrapped in
DistributedDataParallel. DDP all-reduces gradients from hooks on each parameter's gradient
accumulator, and it does not see `autograd.grad` (which accumulates nothing). So each update makes
exactly one forward through the DDP wrapper (D_I on real and fake together; G on x), and every other
forward of that update (the gradient penalty's critic, the cycle's second G pass, the frozen D
during the G update) goes through the wrapped module itself. All of their gradients, including the
penalty's double-backward terms, reach the same per-parameter accumulators within the one ordinary
backward, so the hook fires once per parameter with the full sum and the all-reduce averages all
of it. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from .amgan import UPSAMPLINGS, EditNet, Discriminator, attention_crop
from .errors import UserError
from .images import save_image, tile_rows
from .losses import (attention_loss, classification_loss, cycle_loss, d_adversarial,
                     g_adversarial, gradient_penalty, mask_regularizer, perceptual_loss)
from .schema import MISSING, Schema

# Each method: where alpha comes from, what guides it, and which of D_C / L_p it uses.
# attention: generator | none | separate (SaGAN's network) | cam (the CAM is alpha)
# attention_loss: cam (L_a, L1 to the CAM) | mask (GANimation's regulariser) | none
PRESETS: dict[str, dict[str, Any]] = {
    "amgan": dict(attention="generator", attention_loss="cam", use_dc=True, use_perceptual=True),
    "stargan": dict(attention="none", attention_loss="none", use_dc=False, use_perceptual=False),
    "ganimation": dict(attention="generator", attention_loss="mask", use_dc=False,
                       use_perceptual=False),
    # SaGAN's losses are adversarial, classification and reconstruction: no mask term (our reading).
    "sagan": dict(attention="separate", attention_loss="none", use_dc=False, use_perceptual=False),
    "no-dc": dict(attention="generator", attention_loss="cam", use_dc=False, use_perceptual=True),
    "no-perceptual": dict(attention="generator", attention_loss="cam", use_dc=True,
                          use_perceptual=False),
    "no-attention-loss": dict(attention="generator", attention_loss="none", use_dc=True,
                              use_perceptual=True),
    "cam-as-mask": dict(attention="cam", attention_loss="none", use_dc=True, use_perceptual=True),
}


@dataclass
class AmganConfig:
    """Everything a run needs; written next to its outputs as train_config.json."""

    db: str | None = None                 # catalog DB to train on
    out: str = "runs/amgan"
    classifier: str | None = None         # CNN+CAM model dir; None -> shipped classifier-cam
    method: str = "amgan"                 # a key of PRESETS
    split: str | None = "train"
    size: int = 64
    iters: int = 20000                    # D updates (StarGAN's counting)
    batch_size: int = 16                  # per process
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5
    lambda_cls: float = 1.0
    lambda_cyc: float = 10.0
    lambda_a: float = 10.0
    lambda_p: float = 20.0                # 10 on Shopping100k
    lambda_gp: float = 10.0
    lambda_mask: float = 0.1              # GANimation's mask weight; our TV term is a mean
    perceptual_conv5: bool = True         # False: avg-pool features only (Shopping100k)
    # conv5 maps finer than this are average-pooled to it for L_p. Our choice: the paper's
    # ResNet-50 at 128 px has 4x4 conv5 maps; the reference is another person in another pose on
    # another background, and finer maps (8x8 from our stride-8 CNN) would ask x* to copy more of
    # that layout. 0 keeps the maps as they are.
    perceptual_grid: int = 4
    # The 64x64 synthetic default, sized to this kind of CPU (DESIGN, "Measured"): StarGAN's
    # 64/6 generator and 64-wide D are ~20x slower at 128x128 and do not fit a CPU budget. The
    # shipped models use StarGAN's widths at 64x64, trained on a GPU (see their model cards).
    g_conv_dim: int = 32
    g_repeat_num: int = 3
    att_conv_dim: int = 16                # SaGAN's separate attention network
    g_upsample: str = "resize"            # amgan.UPSAMPLINGS: "deconv" is StarGAN's
    d_conv_dim: int = 32
    d_repeat_num: int = 5                 # 64 -> 2; D_C has 2 fewer layers on half-size crops
    attention: str | None = None          # None: from the method's preset
    attention_loss: str | None = None
    use_dc: bool | None = None
    use_perceptual: bool | None = None
    augment: bool = False
    sample_every: int = 1000
    ckpt_every: int = 1000
    log_every: int = 50
    seed: int = 0
    workers: int = 0
    # CPU threads for torch (None: torch's default). On a CPU that other jobs share, one thread
    # per process avoids OpenMP threads waiting on each other (measured up to 15x slower).
    threads: int | None = None
    device: str = "auto"
    # bf16 autocast; None: on where the hardware does bf16 natively (bf16_pays). Measured at 64x64,
    # batch 16, on a 2-core AVX512-BF16 CPU: 1.5-1.7x faster, losses within 1% of fp32 over 40
    # iterations. The gradient penalty always runs in fp32.
    bf16: bool | None = None
    channels_last: bool = False           # measured no faster on that CPU
    resume: bool = False
    # Stop after this iteration with a checkpoint and a model, the schedule still planned for
    # `iters` (time-boxed sessions; --resume with a later stop_at goes on).
    stop_at: int | None = None
    progress: bool = True

    def __post_init__(self):
        if self.method not in PRESETS:
            raise UserError(f"unknown method {self.method!r}; valid: {', '.join(PRESETS)}")
        for key, value in PRESETS[self.method].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.size % 2 ** self.d_repeat_num or self.d_repeat_num < 3:
            raise UserError(f"--size {self.size} must be divisible by 2**d_repeat_num "
                            f"({2 ** self.d_repeat_num}) and d_repeat_num at least 3")
        if self.size % 4:
            raise UserError(f"--size {self.size} must be divisible by 4 (two down-samplings)")
        for name in ("iters", "batch_size", "n_critic", "sample_every", "ckpt_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.g_upsample not in UPSAMPLINGS:
            raise UserError(f"--g-upsample must be one of {', '.join(UPSAMPLINGS)}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise UserError(f"--stop-at must be between 1 and --iters ({self.iters})")

    @property
    def end(self) -> int:
        """The iteration this invocation stops after."""
        return self.iters if self.stop_at is None else self.stop_at

    @property
    def use_bf16(self) -> bool:
        return bf16_pays(self.device) if self.bf16 is None else self.bf16

    @property
    def needs_classifier(self) -> bool:
        return self.attention_loss == "cam" or self.use_perceptual or self.attention == "cam"


def bf16_pays(device: str = "auto") -> bool:
    """Whether bf16 autocast is native here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, stay in fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def preset(method: str, **overrides) -> AmganConfig:
    """A config for one of the paper's methods, e.g. preset("stargan", iters=1000)."""
    return AmganConfig(method=method, **overrides)


# -- data ------------------------------------------------------------------------------------

class DataOrder:
    """Deterministic batches from the seed: epoch e is a permutation drawn from (seed, e), rank r
    takes every world-th index of it (a DistributedSampler-like shard), batches drop the tail."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 epoch: int = 0, pos: int = 0):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_rank = n // world
        if self.per_rank < batch_size:
            raise UserError(f"{n} training items are too few for {world} process(es) of batch "
                            f"size {batch_size}")
        self.epoch, self.pos = epoch, pos

    def batches(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        shard = perm[self.rank::self.world][: self.per_rank]
        k = self.per_rank // self.batch_size
        return shard[: k * self.batch_size].reshape(k, self.batch_size)

    def __iter__(self):
        while True:
            order = self.batches(self.epoch)
            while self.pos < len(order):
                self.pos += 1
                yield order[self.pos - 1]
            self.epoch, self.pos = self.epoch + 1, 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y, i


def batch_stream(dataset, order: DataOrder, workers: int = 0):
    """Yield (x, labels, indices) in `order`; workers prefetch, the order stays the seed's."""
    if workers == 0:
        for idx in order:
            xs, ys = zip(*(dataset[int(i)] for i in idx))
            yield torch.stack(xs), torch.stack(ys), torch.as_tensor(idx)
        return
    while True:
        # One loader per epoch over the batches left in it: resumes start mid-epoch.
        epoch, start = order.epoch, order.pos
        left = [list(map(int, b)) for b in order.batches(epoch)[start:]]
        loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_sampler=left,
                                             num_workers=workers)
        for k, batch in enumerate(loader):
            order.pos = start + k + 1
            yield batch
        order.epoch, order.pos = epoch + 1, 0


def _group_keys(dataset) -> np.ndarray | None:
    """Per item: (category, gender) as strings where the data has them, else None."""
    items = getattr(dataset, "items", None)
    if items is None:
        return None
    cols = [c for c in ("category", "gender") if c in items.columns and items[c].notna().any()]
    if not cols:
        return None
    return items[cols].astype(str).agg("|".join, axis=1).to_numpy()


class ReferencePicker:
    """Draws L_p's reference image: an item whose attributes all equal the target vector.

    Items are grouped once by their whole label vector (plus category and gender where the data has
    them, taken from the input item), which is the catalog's `matching` query done in memory. When
    no item has the whole target vector, the reference is an item with the manipulated attribute's
    target value only; when not even that exists, the sample has no reference and its L_p is masked
    out. A missing value (-1) in the target matches items missing it too.
    """

    def __init__(self, labels: np.ndarray, group_keys: np.ndarray | None = None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.group_keys = group_keys
        self.exact: dict[tuple, np.ndarray] = {}
        keys = [tuple(row) + ((group_keys[i],) if group_keys is not None else ())
                for i, row in enumerate(self.labels.tolist())]
        buckets: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            buckets.setdefault(k, []).append(i)
        self.exact = {k: np.asarray(v) for k, v in buckets.items()}
        self.by_value = [
            {int(v): np.nonzero(self.labels[:, j] == v)[0] for v in np.unique(self.labels[:, j])}
            for j in range(self.labels.shape[1])
        ]

    def pick(self, target: np.ndarray, attribute: int, rng: np.random.Generator,
             source: np.ndarray | None = None) -> np.ndarray:
        """Item index per row of `target` [B, M] (inputs' items: `source`), -1 for none."""
        out = np.full(len(target), -1, dtype=np.int64)
        for b, row in enumerate(np.asarray(target).tolist()):
            key = tuple(row)
            if self.group_keys is not None and source is not None:
                key += (self.group_keys[int(source[b])],)
            pool = self.exact.get(key)
            if pool is None:
                pool = self.by_value[attribute].get(int(row[attribute]))
            if pool is not None and len(pool):
                out[b] = pool[rng.integers(len(pool))]
        return out


# -- the training step -----------------------------------------------------------------------

def sample_targets(labels: torch.Tensor, attribute: int, n_values: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The labels with `attribute` set to a random value different from the current one."""
    trg = labels.clone()
    cur = labels[:, attribute]
    if n_values == 1:
        trg[:, attribute] = 0
        return trg
    shift = torch.randint(1, n_values, cur.shape, generator=generator)
    any_value = torch.randint(0, n_values, cur.shape, generator=generator)
    trg[:, attribute] = torch.where(cur == MISSING, any_value, (cur + shift) % n_values)
    return trg


def classifier_input(classifier, x: torch.Tensor) -> torch.Tensor:
    """x resized to the classifier's training size when that differs from the GAN's."""
    size = (getattr(classifier, "config", None) or {}).get("size")
    if size and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < x.shape[-1])
    return x


def compute_cam(classifier, x: torch.Tensor, attribute: int, value: torch.Tensor) -> torch.Tensor:
    """a*: the frozen classifier's CAM of the target value on the input x, at x's resolution.

    The paper's text leaves open on which image the CAM is taken; we take it on the input x: it
    is fixed for the update (not a target that moves with G), costs one forward, and marks where
    the classifier looks for this attribute on this garment.
    """
    with torch.no_grad():
        cam = classifier.cam(classifier_input(classifier, x), attribute, value.to(x.device))
    if cam.shape[-2:] != x.shape[-2:]:
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam.float().clamp(0, 1)


def _unwrap(m):
    return m.module if hasattr(m, "module") else m


class AmganTrainer:
    """Networks, optimisers and the two updates of one method; no files, no data loading."""

    def __init__(self, config: AmganConfig, schema: Schema, classifier=None,
                 device: str | torch.device = "cpu", ddp: bool = False):
        self.cfg, self.schema, self.device = config, schema, torch.device(device)
        self.classifier = classifier
        if config.needs_classifier and classifier is None:
            raise UserError(f"method {config.method!r} needs the CNN+CAM classifier")
        if classifier is not None:
            for p in classifier.parameters():
                p.requires_grad_(False)
        n, c_dim = schema.n_values, schema.condition_dim
        counts = [len(a.values) for a in schema.attributes]
        self.net = EditNet(c_dim, config.g_conv_dim, config.g_repeat_num, config.attention,
                           config.att_conv_dim, config.g_upsample).to(self.device)
        self.D = Discriminator(config.size, n, config.d_conv_dim, config.d_repeat_num,
                               counts).to(self.device)
        self.DC = (Discriminator(config.size // 2, n, config.d_conv_dim, config.d_repeat_num - 2,
                                 counts).to(self.device) if config.use_dc else None)
        if config.channels_last:
            for m in self.modules():
                m.to(memory_format=torch.channels_last)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.net.parameters(), config.lr, betas)
        d_params = list(self.D.parameters()) + (list(self.DC.parameters()) if self.DC else [])
        self.opt_d = torch.optim.Adam(d_params, config.lr, betas)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The networks have no buffers (instance norm keeps no running statistics).
            self.net = DDP(self.net, device_ids=ids)
            self.D = DDP(self.D, device_ids=ids)
            if self.DC is not None:
                self.DC = DDP(self.DC, device_ids=ids)

    def modules(self):
        return [m for m in (self.net, self.D, self.DC) if m is not None]

    def autocast(self):
        if not self.cfg.use_bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr

    def _prepare(self, x, labels, attribute, for_g: bool):
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels = labels.to("cpu")
        trg = sample_targets(labels, attribute, len(self.schema.attributes[attribute].values))
        c_trg = self.schema.condition(trg, attribute).to(self.device)
        c_org = self.schema.condition(labels, attribute).to(self.device)
        cam = None
        # The D update needs the CAM only where it is alpha; the G update also for L_a.
        if self.cfg.attention == "cam" or (for_g and self.cfg.attention_loss == "cam"):
            cam = compute_cam(self.classifier, x, attribute, trg[:, attribute])
        return x, labels.to(self.device), trg, c_trg, c_org, cam

    def d_step(self, x, labels, attribute: int) -> dict[str, float]:
        """One critic update of D_I (and D_C): WGAN-GP + lambda_cls L_cls on real images."""
        cfg = self.cfg
        x, labels, trg, c_trg, _, cam = self._prepare(x, labels, attribute, for_g=False)
        with torch.no_grad(), self.autocast():
            x_fake, alpha, _ = _unwrap(self.net)(x, c_trg, alpha=cam)
        x_fake, alpha = x_fake.float(), alpha.float()
        logs = {}
        d_loss = self._critic_loss(self.D, x, x_fake, labels, "D", logs)
        if self.DC is not None:
            x_c, x_fake_c, _ = attention_crop(alpha, x, x_fake, cfg.size // 2)
            d_loss = d_loss + self._critic_loss(self.DC, x_c, x_fake_c, labels, "DC", logs)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        logs["D/loss"] = d_loss.item()
        return logs

    def _critic_loss(self, D, real, fake, labels, name, logs):
        b = real.size(0)
        with self.autocast():
            # One forward through the (DDP-wrapped) critic for real and fake together.
            src, cls = D(torch.cat([real, fake]))
        src = src.float()
        adv = d_adversarial(src[:b], src[b:])
        cls_loss = classification_loss([lg[:b] for lg in cls], labels)
        # The penalty's critic runs on the wrapped module itself (see the module docstring).
        gp = gradient_penalty(_unwrap(D).critic, real, fake)
        logs.update({f"{name}/adv": adv.item(), f"{name}/gp": gp.item(),
                     f"{name}/cls": cls_loss.item()})
        return adv + self.cfg.lambda_gp * gp + self.cfg.lambda_cls * cls_loss

    def g_step(self, x, labels, attribute: int, reference=None) -> dict[str, float]:
        """One generator update; `reference(trg, attribute) -> (images, mask)` feeds L_p."""
        cfg = self.cfg
        x, labels, trg, c_trg, c_org, cam = self._prepare(x, labels, attribute, for_g=True)
        critics = [_unwrap(m) for m in (self.D, self.DC) if m is not None]
        for m in critics:
            m.requires_grad_(False)
        logs = {}
        try:
            with self.autocast():
                x_fake, alpha, _ = self.net(x, c_trg, alpha=cam)
                src, cls = critics[0](x_fake)
                g_adv = g_adversarial(src.float())
                g_cls = classification_loss(cls, trg)
                if self.DC is not None:
                    _, x_fake_c, _ = attention_crop(alpha, x, x_fake, cfg.size // 2)
                    src_c, cls_c = critics[1](x_fake_c)
                    g_adv = g_adv + g_adversarial(src_c.float())
                    g_cls = g_cls + classification_loss(cls_c, trg)
                # Cycle: back to the original values; with the CAM as alpha, the same region.
                x_rec, _, _ = _unwrap(self.net)(x_fake, c_org, alpha=cam)
                g_cyc = cycle_loss(x, x_rec.float())
                g_loss = g_adv + cfg.lambda_cls * g_cls + cfg.lambda_cyc * g_cyc
                logs.update({"G/adv": g_adv.item(), "G/cls": g_cls.item(), "G/cyc": g_cyc.item()})
                if cfg.attention_loss == "cam":
                    g_att = attention_loss(alpha.float(), cam)
                    g_loss = g_loss + cfg.lambda_a * g_att
                    logs["G/att"] = g_att.item()
                elif cfg.attention_loss == "mask":
                    g_att = mask_regularizer(alpha.float())
                    g_loss = g_loss + cfg.lambda_mask * g_att
                    logs["G/mask"] = g_att.item()
                if cfg.use_perceptual and reference is not None:
                    g_per = self._perceptual(x_fake, trg, attribute, reference)
                    g_loss = g_loss + cfg.lambda_p * g_per
                    logs["G/per"] = g_per.item()
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
        finally:
            for m in critics:
                m.requires_grad_(True)
        logs["G/loss"] = g_loss.item()
        logs["alpha"] = alpha.detach().float().mean().item()
        return logs

    def _perceptual(self, x_fake, trg, attribute, reference):
        ref, mask = reference(trg, attribute)
        clf = self.classifier
        feats_f, pooled_f, _ = clf.forward_all(classifier_input(clf, x_fake))
        with torch.no_grad():
            feats_r, pooled_r, _ = clf.forward_all(classifier_input(clf, ref.to(self.device)))
        grid = self.cfg.perceptual_grid
        if grid and feats_f.shape[-1] > grid:
            feats_f = F.adaptive_avg_pool2d(feats_f, grid)
            feats_r = F.adaptive_avg_pool2d(feats_r, grid)
        return perceptual_loss(feats_f, feats_r, pooled_f, pooled_r,
                               use_conv5=self.cfg.perceptual_conv5, mask=mask.to(self.device))

    @torch.no_grad()
    def translate(self, x, labels, attribute: int, target: torch.Tensor):
        """x* and alpha for one attribute set to `target` [B] (for samples)."""
        trg = labels.clone().cpu()
        trg[:, attribute] = target.cpu()
        c = self.schema.condition(trg, attribute).to(self.device)
        cam = (compute_cam(self.classifier, x, attribute, trg[:, attribute])
               if self.cfg.attention == "cam" else None)
        x_star, alpha, _ = _unwrap(self.net)(x, c, alpha=cam)
        return x_star.float(), alpha.float()

    # -- state --------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for prefix, m in (("net.", self.net), ("D.", self.D), ("DC.", self.DC)):
            if m is not None:
                out.update({prefix + k: v for k, v in _unwrap(m).state_dict().items()})
        return out

    def load_tensors(self, tensors: dict) -> None:
        for prefix, m in (("net.", self.net), ("D.", self.D), ("DC.", self.DC)):
            if m is not None:
                sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                try:
                    _unwrap(m).load_state_dict(sub)
                except RuntimeError as exc:
                    raise UserError("the checkpoint does not fit this run's architecture (resume "
                                    "with the flags it was started with: see its "
                                    "train_config.json)") from exc


def lr_at(config: AmganConfig, it: int) -> float:
    """Constant for the first half, then linear to 0 at the last iteration."""
    half = config.iters // 2
    if it < half:
        return config.lr
    return config.lr * (config.iters - it) / max(1, config.iters - half)


# -- samples and logs ------------------------------------------------------------------------

def sample_grid(trainer: AmganTrainer, x: torch.Tensor, labels: torch.Tensor,
                values_per_attribute: int = 4) -> np.ndarray:
    """Rows: the inputs, then for a few values of each attribute the edit and its mask."""
    rows = [x]
    for j, attr in enumerate(trainer.schema.attributes):
        for v in preview_values(len(attr.values), values_per_attribute):
            x_star, alpha = trainer.translate(x, labels, j, torch.full((len(x),), v))
            rows += [x_star, alpha.expand(-1, 3, -1, -1)]
    return tile_rows(rows)


def preview_values(k: int, n: int) -> list[int]:
    """n value indices spread evenly over 0..k-1 (first and last included): what pictures show."""
    return sorted({int(v) for v in np.linspace(0, k - 1, min(k, n)).round()})


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the JSONL log is always written
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _rng_state(np_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": np_rng.bit_generator.state, "python": random.getstate()}


def _set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln and json.loads(ln).get("iter", 0) <= step]
    ckpt.write_text(path, "".join(ln + "\n" for ln in keep))


# -- the run ---------------------------------------------------------------------------------

def _dist_init(config: AmganConfig) -> tuple[int, int, torch.device, bool]:
    """(rank, world, device, whether we started the process group) from torchrun's environment."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = config.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local if world > 1 else 0)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return rank, world, device, started


def _load_classifier(config: AmganConfig, device):
    from .classifier import load_classifier

    return load_classifier(config.classifier, role="cam", device=str(device))


def _classifier_record(config: AmganConfig) -> dict | None:
    """The CNN+CAM network given to the run or, when none was, the shipped one it trained against;
    None for a method that needs none and was given none."""
    if config.classifier is not None:
        path = Path(config.classifier)
    elif not config.needs_classifier:
        return None
    else:
        try:
            path = ckpt.shipped_model("classifier-cam")
        except UserError:
            return {"path": None, "sha256": None}
    from .classifier import classifier_digest

    weights = path / ckpt.WEIGHTS
    return {"path": str(path.resolve()),
            "sha256": classifier_digest(weights) if weights.is_file() else None}


def training_seconds(log: Path, upto: int) -> float:
    """Training time up to iteration `upto`, summed over the invocations (a run and its resumes)
    from the log; logs without `since` (older runs) count as a single invocation."""
    last: dict[int, dict] = {}  # since -> the invocation's last record up to `upto`
    if log.is_file():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "s_per_iter" in record and record.get("iter", 0) <= upto:
                last[record.get("since", 0)] = record
    return sum(r["s_per_iter"] * (r["iter"] - since) for since, r in last.items())


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


def train_amgan(config: AmganConfig, *, dataset=None, schema: Schema | None = None,
                classifier=None) -> Path:
    """Train one method; returns the output directory (model.safetensors + config.json).

    `dataset`, `schema` and `classifier` may be passed in already built (tests, notebooks); by
    default they come from `config.db` and `config.classifier`.
    """
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world, device, started = _dist_init(config)
    try:
        return _train(config, rank, world, device, dataset, schema, classifier, tqdm)
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(config, rank, world, device, dataset, schema, classifier, tqdm) -> Path:
    import torch.distributed as dist

    out = Path(config.out)
    if dataset is None:
        if not config.db:
            raise UserError("no catalog DB given (--db)")
        from .data import CatalogImages

        dataset = CatalogImages(config.db, split=config.split, size=config.size,
                                augment=config.augment)
    schema = schema or dataset.schema
    if classifier is None and config.needs_classifier:
        classifier = _load_classifier(config, device)
    if classifier is not None:
        classifier = classifier.to(device).eval()

    # Same initial weights on every rank (DDP also broadcasts rank 0's), then per-rank streams.
    torch.manual_seed(config.seed)
    trainer = AmganTrainer(config, schema, classifier, device, ddp=world > 1)
    torch.manual_seed(config.seed * 1000 + rank)
    random.seed(config.seed * 1000 + rank)
    np_rng = np.random.default_rng([config.seed, rank])

    labels_all = np.asarray(dataset.labels, dtype=np.int64)
    picker = ReferencePicker(labels_all, _group_keys(dataset)) if config.use_perceptual else None
    order = DataOrder(len(dataset), config.batch_size, config.seed, rank, world)

    start = 0
    if config.resume:
        latest = ckpt.latest_checkpoint(out)
        if latest is None:
            raise UserError(f"{out}: no checkpoint to resume from")
        tensors, state = ckpt.load_checkpoint(latest)
        trainer.load_tensors(tensors)
        trainer.opt_g.load_state_dict(state["opt_g"])
        trainer.opt_d.load_state_dict(state["opt_d"])
        start = int(state["step"])
        order.epoch, order.pos = state["order"]["epoch"], state["order"]["pos"]
        rngs = state["rng"]
        if len(rngs) == world:
            _set_rng_state(rngs[rank], np_rng)
        else:  # another world size: the data order resumes exactly, the random draws do not
            torch.manual_seed(config.seed * 1000 + rank + start)
        if rank == 0:
            _trim_log(out / "log.jsonl", start)
        if start >= config.end:
            raise UserError(f"{out}: already at iteration {start}; nothing to do before "
                            f"iteration {config.end}")
    if rank == 0:
        ckpt.write_json(out / "train_config.json", dataclasses.asdict(config))

    def reference(trg, attribute):
        idx = picker.pick(trg.numpy(), attribute, np_rng, source=current_idx)
        imgs = torch.stack([dataset[int(i)][0] if i >= 0 else torch.zeros(3, config.size,
                                                                          config.size)
                            for i in idx])
        return imgs, torch.as_tensor(idx >= 0, dtype=torch.float32)

    # A fixed batch for the sample grids, the same every run of this seed.
    sample_idx = np.random.default_rng([config.seed, 99]).permutation(len(dataset))[:8]
    x_sample = torch.stack([dataset[int(i)][0] for i in sample_idx]).to(device)
    y_sample = torch.as_tensor(labels_all[sample_idx])

    writer = _tensorboard(out) if rank == 0 else None
    log_path = out / "log.jsonl"
    M = schema.n_attributes
    stream = batch_stream(dataset, order, config.workers)
    bar = tqdm(total=config.iters, initial=start, disable=rank != 0 or not config.progress,
               desc=config.method, dynamic_ncols=True)
    logs: dict[str, float] = {}
    train_t0 = time.time()
    end = config.end
    for it in range(start, end):
        x, y, current_idx = next(stream)
        current_idx = current_idx.numpy()
        lr = lr_at(config, it)
        trainer.set_lr(lr)
        logs.update(trainer.d_step(x, y, it % M))
        if (it + 1) % config.n_critic == 0:
            g_attr = (it // config.n_critic) % M
            logs.update(trainer.g_step(x, y, g_attr, reference if picker else None))
        step = it + 1
        bar.update(1)
        if rank == 0 and (step % config.log_every == 0 or step == end):
            # s_per_iter averages this invocation's iterations, which began after `since`
            record = {"iter": step, "since": start, "lr": lr,
                      "s_per_iter": (time.time() - train_t0) / (step - start),
                      **{k: round(v, 5) for k, v in logs.items()}}
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None:
                for k, v in logs.items():
                    writer.add_scalar(k, v, step)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logs.items()
                             if k in ("D/loss", "G/loss", "G/cls", "G/att")})
        if rank == 0 and (step % config.sample_every == 0 or step == end):
            save_image(out / "samples" / f"iter-{step:07d}.png",
                       sample_grid(trainer, x_sample, y_sample))
        if step % config.ckpt_every == 0 or step == end:
            rng = _rng_state(np_rng)
            if world > 1:
                rngs = [None] * world
                dist.all_gather_object(rngs, rng)
            else:
                rngs = [rng]
            if rank == 0:
                ckpt.save_checkpoint(out, step, trainer.tensors(), {
                    "opt_g": trainer.opt_g.state_dict(), "opt_d": trainer.opt_d.state_dict(),
                    "order": order.state(), "rng": rngs, "world": world,
                })
    bar.close()
    if writer is not None:
        writer.close()
    if rank == 0:
        net = {k: v for k, v in trainer.tensors().items() if k.startswith("net.")}
        ckpt.save_weights(out / ckpt.WEIGHTS, net, half=True)
        ckpt.write_json(out / ckpt.CONFIG,
                        model_config(config, schema, end, training_seconds(log_path, end)))
    if world > 1:
        dist.barrier()
    return out


def export_model(run_dir: str | Path, out: str | Path, step: int | None = None) -> dict:
    """A run's checkpoint (the latest, or `step`) -> a model directory the manipulator loads.

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
    saved = ckpt.read_json(run_dir / "train_config.json")
    config = AmganConfig(**{k: (tuple(v) if isinstance(v, list) else v)
                            for k, v in saved.items() if k in fields})
    tensors, state = ckpt.load_checkpoint(path)
    done = int(state["step"])
    wall = training_seconds(run_dir / "log.jsonl", done)
    schema = Schema.from_dict(_schema_of_run(config))
    model = model_config(config, schema, done, wall)
    model["exported_from"] = {"run": str(run_dir), "checkpoint": path.name,
                              "planned_iterations": config.iters}
    net = {k: v for k, v in tensors.items() if k.startswith("net.")}
    ckpt.save_model_dir(out, model, net, half=True)
    return model


def _schema_of_run(config: AmganConfig) -> dict:
    from .catalog import Catalog

    return Catalog.open(config.db).schema.to_dict()
