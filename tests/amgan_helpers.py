"""Tiny data and a tiny CNN+CAM classifier with the `AttributeClassifier` surface, for the AMGAN tests.

The stand-in classifier keeps these tests independent of the classifier's training and fast: a
three-layer CNN with one linear head per attribute, whose CAM is the head's weights over the last
conv maps, normalised to [0, 1] (the same recipe as the real one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amgan_search.schema import Schema

SCHEMA = Schema.from_dict({"color": ["red", "blue", "green"], "sleeve": ["long", "short"]})


class TinyClassifier(nn.Module):
    def __init__(self, schema: Schema = SCHEMA, size: int = 32):
        super().__init__()
        self.schema, self.config = schema, {"size": size}
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                                  nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(16, len(a.values)) for a in schema.attributes)

    def features(self, x):
        return self.body(x)

    def pooled(self, x):
        return self.features(x).mean((2, 3))

    def forward_all(self, x):
        f = self.features(x)
        p = f.mean((2, 3))
        return f, p, [h(p) for h in self.heads]

    def logits(self, x):
        return self.forward_all(x)[2]

    def cam(self, x, attribute, value):
        f = self.features(x)
        w = self.heads[attribute].weight[torch.as_tensor(value).expand(x.size(0))]  # [B, C]
        cam = F.relu(torch.einsum("bc,bchw->bhw", w, f))[:, None]
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        top = cam.flatten(1).max(1).values.clamp_min(1e-8)[:, None, None, None]
        return cam / top

    def predict(self, x):
        probs = [lg.softmax(1) for lg in self.logits(x)]
        p, i = zip(*(pr.max(1) for pr in probs))
        return torch.stack(i, 1), torch.stack(p, 1)


class TinyImages(torch.utils.data.Dataset):
    """Random-ish images whose top half is tinted by the color label: enough to train a few steps."""

    def __init__(self, n: int = 24, size: int = 32, schema: Schema = SCHEMA, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.schema = schema
        self.labels = np.stack([rng.integers(0, len(a.values), n) for a in schema.attributes], 1)
        self.images = torch.from_numpy(rng.random((n, 3, size, size), dtype=np.float32))
        for i, c in enumerate(self.labels[:, 0]):
            self.images[i, c % 3, : size // 2] = 0.9

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].clone(), torch.from_numpy(self.labels[i].copy())


def tiny_config(tmp_path, method="amgan", **kw):
    from amgan_search.train.config import AmganConfig

    base = dict(out=str(tmp_path / method), method=method, size=32, iters=4, batch_size=4,
                n_critic=2, g_conv_dim=8, g_repeat_num=1, att_conv_dim=4, d_conv_dim=8,
                d_repeat_num=3, sample_every=1000, ckpt_every=1000, log_every=1, seed=0,
                progress=False, bf16=False)
    base.update(kw)
    return AmganConfig(**base)
