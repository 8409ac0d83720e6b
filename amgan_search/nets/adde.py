"""A disentangled attribute embedding with an attribute memory (ADDE: Hou et al., ICCV 2021),
built from the paper's description on a frozen CNN trunk.

The embedding of an image is one chunk per labelled attribute and a rest chunk:

    f(x) = [w_1 u_1(x), ..., w_M u_M(x), w_r u_r(x)]

u_a is a small projection of the trunk's pooled features (two linear layers), L2-normalised, and
a linear classifier on it reads the attribute's value. The rest chunk u_r carries what no label
names (a shopper who asks for another colour keeps the pattern and the neckline, which the training
labels may not hold): our addition to ADDE, whose chunks are all labelled. It is not trained,
since the label losses would teach it to ignore exactly what no label names. Three choices:
- "residual" (the default): what the labelled values do not explain, the trunk's pooled features
  minus the mean features of their values (an additive model, the means over the training images:
  `rest_mean` + the sum of each value's `rest_offsets`), the values being those the chunks read;
- "trunk": the pooled features as they are (they carry the query's old colour, which no
  manipulation of the colour chunk takes out of them);
- "none": no rest chunk.
The weights w (`scale`) make the inner product of two embeddings a weighted sum of per-chunk
cosines: sum_a w_a^2 cos_a + w_r^2 cos_r.

The attribute memory holds one prototype per attribute value, a full-length row of D (ADDE's
memory block); training keeps each row inside its own attribute's chunk (an L1 term on the rest
of the row). A query is manipulated as f - M[old] + M[new] for each changed attribute (ADDE's
arithmetic), or with the changed chunks set to the new value's prototype (`mode="set"`); each
chunk is then brought back to its weight's norm, the norm every gallery embedding has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amgan_search.schema import Schema

RESTS = ("residual", "trunk", "none")
MODES = ("arith", "set")


class AttributeMemory(nn.Module):
    """One prototype per attribute value: rows [sum of values, D], attribute after attribute."""

    def __init__(self, schema: Schema, dim: int):
        super().__init__()
        counts = [len(a.values) for a in schema.attributes]
        self.register_buffer("offsets", torch.tensor([0] + counts[:-1]).cumsum(0), persistent=False)
        self.weight = nn.Parameter(torch.zeros(sum(counts), dim))

    def rows(self, attribute: int | torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The prototypes of `values` (indices [B]) of one attribute (or of each row's), [B, D]."""
        attribute = torch.as_tensor(attribute, device=self.weight.device)
        return self.weight[self.offsets[attribute] + values.to(self.weight.device)]


class DisentangledEncoder(nn.Module):
    """Frozen trunk -> one projected, normalised chunk per attribute (+ the rest) -> f(x); the memory.

    `trunk` is an `AttributeClassifier` (its `pooled` features are the input); it is kept frozen
    (our choice: the encoder stage of ADDE trains its CNN, ours reuses the CNN trained by
    `train classifier`, so features can be computed once and the heads trained in minutes).
    """

    def __init__(self, trunk: nn.Module, schema: Schema, chunk_dim: int = 64, hidden: int = 256,
                 rest: str = "residual", rest_weight: float = 0.5):
        super().__init__()
        if rest not in RESTS:
            raise ValueError(f"rest must be one of {RESTS}, got {rest!r}")
        self.trunk = trunk.eval().requires_grad_(False)
        self.schema, self.rest = schema, rest
        self.size = int(trunk.size)
        in_dim = int(trunk.embed_dim)
        self.chunk_dim, self.rest_dim = int(chunk_dim), 0 if rest == "none" else in_dim
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, chunk_dim))
            for _ in schema.attributes)
        self.classifiers = nn.ModuleList(nn.Linear(chunk_dim, len(a.values))
                                         for a in schema.attributes)
        m = len(schema.attributes)
        weights = [1.0] * m + ([float(rest_weight)] if self.rest_dim else [])
        self.register_buffer("scale", torch.tensor(weights))  # persistent: part of the embedding
        self.embed_dim = m * self.chunk_dim + self.rest_dim
        self.memory = AttributeMemory(schema, self.embed_dim)
        # the residual rest's means (persistent, set from the training images: `set_rest_means`)
        self.register_buffer("rest_mean", torch.zeros(in_dim))
        self.register_buffer("rest_offsets", torch.zeros(sum(len(a.values) for a in schema.attributes),
                                                         in_dim))

    # -- the layout of f -----------------------------------------------------------------------

    def block(self, attribute: int) -> slice:
        """Where attribute `attribute`'s chunk lies in f (the rest: `block(len(attributes))`)."""
        start = attribute * self.chunk_dim
        return slice(start, start + (self.chunk_dim if attribute < len(self.schema.attributes)
                                     else self.rest_dim))

    def blocks(self) -> list[slice]:
        n = len(self.schema.attributes) + (1 if self.rest_dim else 0)
        return [self.block(a) for a in range(n)]

    def renormalise(self, f: torch.Tensor) -> torch.Tensor:
        """Every chunk of f brought to the norm its weight gives it."""
        parts = [F.normalize(f[:, b], dim=1) * w for b, w in zip(self.blocks(), self.scale)]
        return torch.cat(parts, dim=1)

    # -- the surface ---------------------------------------------------------------------------

    def chunks(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        """The unit attribute chunks u_a of pooled trunk features [B, C]."""
        return [F.normalize(p(pooled), dim=1) for p in self.projections]

    def from_pooled(self, pooled: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """f from pooled trunk features, [B, D] (its norm: sqrt(sum w^2)). The residual rest takes
        the values `labels` [B, M] gives (training: the known ones), else those the chunks read."""
        parts = self.chunks(pooled)
        if self.rest == "trunk":
            parts.append(F.normalize(pooled, dim=1))
        elif self.rest == "residual":
            if labels is None:
                labels = torch.stack([c(u).argmax(dim=1) for c, u in zip(self.classifiers, parts)],
                                     dim=1)
            parts.append(F.normalize(self.residual(pooled, labels), dim=1))
        return torch.cat([p * w for p, w in zip(parts, self.scale)], dim=1)

    def residual(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pooled features minus the means of their values (a missing value: none taken out)."""
        out = pooled - self.rest_mean
        for a in range(len(self.schema.attributes)):
            v = torch.as_tensor(labels[:, a], device=pooled.device)
            known = (v >= 0).unsqueeze(1)
            out = out - known * self.rest_offsets[self.memory.offsets[a] + v.clamp_min(0)]
        return out

    def set_rest_means(self, pooled: torch.Tensor, labels: torch.Tensor) -> None:
        """The residual rest's means from training features and their labels: the overall mean and
        each value's mean offset from it (over the images that carry a label of that attribute)."""
        with torch.no_grad():
            self.rest_mean.copy_(pooled.mean(0))
            self.rest_offsets.zero_()
            for a, attr in enumerate(self.schema.attributes):
                for v in range(len(attr.values)):
                    rows = labels[:, a] == v
                    if rows.any():
                        self.rest_offsets[int(self.memory.offsets[a]) + v] = \
                            pooled[rows].mean(0) - self.rest_mean

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.pooled(x).float()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The retrieval embedding of images x [B,3,S,S] in [0,1]: f, L2-normalised, [B, D]."""
        return F.normalize(self.from_pooled(self.pooled(x)), dim=1)

    def logits(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Each attribute's value logits, read from its chunk of f."""
        return [c(F.normalize(f[:, self.block(a)], dim=1)) for a, c in enumerate(self.classifiers)]

    def predict(self, f: torch.Tensor) -> torch.Tensor:
        """The values each chunk reads, [B, M]."""
        return torch.stack([lg.argmax(dim=1) for lg in self.logits(f)], dim=1)

    def manipulate(self, f: torch.Tensor, attribute: int | torch.Tensor, new: torch.Tensor,
                   old: torch.Tensor | None = None, mode: str = "arith") -> torch.Tensor:
        """f with one attribute changed to `new` ([B] value indices): f - M[old] + M[new]
        ("arith"; `old` None: the value the chunk reads) or the chunk set to M[new]'s ("set");
        every chunk renormalised. Not L2-normalised as a whole: see `embed`. With "arith" and
        `old` given, `attribute` may be one per row ([B])."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        new = torch.as_tensor(new, dtype=torch.long, device=f.device).expand(f.size(0))
        if mode == "set":
            out = f.clone()
            b = self.block(attribute)
            out[:, b] = self.memory.rows(attribute, new)[:, b]
            return self.renormalise(out)
        if old is None:
            old = self.logits(f)[attribute].argmax(dim=1)
        old = torch.as_tensor(old, dtype=torch.long, device=f.device).expand(f.size(0))
        return self.renormalise(f - self.memory.rows(attribute, old) + self.memory.rows(attribute, new))

    def off_block(self) -> torch.Tensor:
        """A mask of the memory's entries outside each row's own chunk, [rows, D]."""
        mask = torch.ones_like(self.memory.weight, dtype=torch.bool)
        for a, attr in enumerate(self.schema.attributes):
            start = int(self.memory.offsets[a])
            mask[start:start + len(attr.values), self.block(a)] = False
        return mask
