"""AMGAN's two updates: D_I (and D_C) as WGAN-GP critics, then G; networks and optimisers, no files.

Under DDP, G, D_I and D_C are wrapped in DistributedDataParallel. DDP all-reduces gradients from
hooks on each parameter's gradient accumulator, and it does not see `autograd.grad` (which
accumulates nothing). So each update makes exactly one forward through the DDP wrapper (D_I on real
and fake together; G on x), and every other forward of that update (the gradient penalty's critic,
the cycle's second G pass, the frozen D during the G update) goes through the wrapped module
itself. All of their gradients, including the penalty's double-backward terms, reach the same
per-parameter accumulators within the one ordinary backward, so the hook fires once per parameter
with the full sum and the all-reduce averages all of it.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F

from amgan_search.errors import UserError
from amgan_search.losses import (alpha_binary_loss, attention_loss, classification_loss,
                                 cycle_loss, d_adversarial, g_adversarial, gradient_penalty,
                                 mask_regularizer, perceptual_loss)
from amgan_search.nets.amgan import Discriminator, EditNet, attention_crop
from amgan_search.nets.classifier import classifier_input, compute_cam
from amgan_search.schema import Schema
from amgan_search.train.batches import sample_targets
from amgan_search.train.config import AmganConfig
from amgan_search.train.diffaug import diff_augment


def _unwrap(m):
    return m.module if hasattr(m, "module") else m


def _told(critic, values):
    """The values a critic is told: only a conditional critic hears them."""
    return values if values is not None and critic.embed is not None else None


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
        told = config.conditional_critic
        self.D = Discriminator(config.size, n, config.d_conv_dim, config.d_repeat_num,
                               counts, conditional=told == "all").to(self.device)
        self.DC = (Discriminator(config.size // 2, n, config.d_conv_dim, config.d_repeat_num - 2,
                                 counts, conditional=told in ("dc", "all")).to(self.device)
                   if config.use_dc else None)
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
        """One critic update of D_I (and D_C): WGAN-GP + lambda_cls L_cls on real images
        (+ lambda_cls_fake L_cls of the edits toward their source values, `AmganConfig`)."""
        cfg = self.cfg
        x, labels, trg, c_trg, _, cam = self._prepare(x, labels, attribute, for_g=False)
        with torch.no_grad(), self.autocast():
            x_fake, alpha, _ = _unwrap(self.net)(x, c_trg, alpha=cam)
        x_fake, alpha = x_fake.float(), alpha.float()
        logs = {}
        # What a conditional critic judges each image under: a photo its own values, an edit
        # the target's (None: no critic is conditional).
        told = ((self._values(labels.cpu()), self._values(trg))
                if self.cfg.conditional_critic != "none" else None)
        d_loss = self._critic_loss(self.D, x, x_fake, labels, "D", logs, told)
        if self.DC is not None:
            x_c, x_fake_c, _ = attention_crop(alpha, x, x_fake, cfg.size // 2)
            d_loss = d_loss + self._critic_loss(self.DC, x_c, x_fake_c, labels, "DC", logs, told)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        logs["D/loss"] = d_loss.item()
        return logs

    def _values(self, indices) -> torch.Tensor:
        """[B, M] value indices -> [B, N] N-hot on the device: what a conditional critic hears."""
        return self.schema.onehot(indices).to(self.device)

    def _seen(self, x):
        """What a critic sees of x: itself, or x through `--diff-augment`'s random transforms."""
        return diff_augment(x, self.cfg.diff_augment)

    def _critic_loss(self, D, real, fake, labels, name, logs, told):
        b = real.size(0)
        # Photos and edits through the same kind of transform, each image its own draw; the
        # penalty's lines then run between what the critic saw.
        real, fake = self._seen(real), self._seen(fake)
        values = _told(_unwrap(D), None if told is None else torch.cat(told))
        with self.autocast():
            # One forward through the (DDP-wrapped) critic for real and fake together.
            src, cls = D(torch.cat([real, fake]), values)
        src = src.float()
        adv = d_adversarial(src[:b], src[b:])
        cls_loss = classification_loss([lg[:b] for lg in cls], labels)
        # The penalty's critic runs on the wrapped module itself (see the module docstring); a
        # conditional critic is told the values on the same line as the image, mixed alike.
        eps = torch.rand(b, 1, 1, 1, device=real.device, dtype=real.dtype)
        critic = _unwrap(D).critic
        if values is not None:
            mixed = eps.flatten(1) * told[0] + (1 - eps.flatten(1)) * told[1]
            critic = partial(critic, values=mixed)
        gp = gradient_penalty(critic, real, fake, eps)
        logs.update({f"{name}/adv": adv.item(), f"{name}/gp": gp.item(),
                     f"{name}/cls": cls_loss.item()})
        loss = adv + self.cfg.lambda_gp * gp + self.cfg.lambda_cls * cls_loss
        if self.cfg.lambda_cls_fake:  # each edit read as the photo it came from (labels)
            fake_cls = classification_loss([lg[b:] for lg in cls], labels)
            logs[f"{name}/cls_fake"] = fake_cls.item()
            loss = loss + self.cfg.lambda_cls_fake * fake_cls
        return loss

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
                told = self._values(trg) if cfg.conditional_critic != "none" else None
                src, cls = critics[0](self._seen(x_fake), _told(critics[0], told))
                g_adv = g_adversarial(src.float())
                g_cls = classification_loss(cls, trg)
                if self.DC is not None:
                    _, x_fake_c, _ = attention_crop(alpha, x, x_fake, cfg.size // 2)
                    src_c, cls_c = critics[1](self._seen(x_fake_c), _told(critics[1], told))
                    g_adv = g_adv + g_adversarial(src_c.float())
                    g_cls = g_cls + classification_loss(cls_c, trg)
                # Cycle: back to the original values; with the CAM as alpha, the same region.
                x_rec, _, _ = _unwrap(self.net)(x_fake, c_org, alpha=cam)
                kept = 1 - alpha.float() if cfg.cycle_region == "kept" else None
                g_cyc = cycle_loss(x, x_rec.float(), kept)
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
                if cfg.lambda_alpha_binary:
                    g_bin = alpha_binary_loss(alpha.float())
                    g_loss = g_loss + cfg.lambda_alpha_binary * g_bin
                    logs["G/alpha_bin"] = g_bin.item()
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
                                    "with the settings it was started with: see its "
                                    "train_config.json)") from exc


def lr_at(config: AmganConfig, it: int) -> float:
    """Constant for the first half, then linear to 0 at the last iteration."""
    half = config.iters // 2
    if it < half:
        return config.lr
    return config.lr * (config.iters - it) / max(1, config.iters - half)
