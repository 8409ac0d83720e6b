"""The attribute schema: attributes in order, each with its values, and the generator's condition.

One place turns attribute names into indices, one-hots and the condition vector m = {m_1..m_N, r}
(paper, Sec. 3): a one-hot over all N attribute values plus a one-hot r over the M attributes that
says which attribute is manipulated (StarGAN's mask vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from amgan_search.errors import UserError

MISSING = -1  # index of an attribute whose value is unknown (Shopping100k's all-zero block)


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[str, ...]

    def index(self, value: str) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            raise UserError(
                f"unknown {self.name} value {value!r}; valid: {', '.join(self.values)}"
            ) from None


@dataclass(frozen=True)
class Schema:
    attributes: tuple[Attribute, ...]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Sequence[str]]) -> "Schema":
        """{"color": ["red", ...], "sleeve": [...]} in order -> Schema."""
        return cls(tuple(Attribute(name, tuple(values)) for name, values in spec.items()))

    def to_dict(self) -> dict[str, list[str]]:
        return {a.name: list(a.values) for a in self.attributes}

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def n_attributes(self) -> int:
        """M, the length of the mask vector r."""
        return len(self.attributes)

    @property
    def n_values(self) -> int:
        """N, the length of the value one-hot m_1..m_N."""
        return sum(len(a.values) for a in self.attributes)

    @property
    def condition_dim(self) -> int:
        return self.n_values + self.n_attributes

    @property
    def offsets(self) -> list[int]:
        """Start of each attribute's block in the value one-hot."""
        return list(np.cumsum([0] + [len(a.values) for a in self.attributes])[:-1])

    def attribute(self, name: str) -> Attribute:
        for a in self.attributes:
            if a.name == name:
                return a
        raise UserError(f"unknown attribute {name!r}; valid: {', '.join(self.names)}")

    def position(self, name: str) -> int:
        return self.names.index(self.attribute(name).name)

    def encode(self, values: Mapping[str, str | None]) -> np.ndarray:
        """Attribute name -> value name (None or absent: missing) as int64 indices [M]."""
        for name in values:
            self.attribute(name)
        return np.array(
            [a.index(values[a.name]) if values.get(a.name) is not None else MISSING
             for a in self.attributes],
            dtype=np.int64,
        )

    def targets(self, wanted: Mapping[str, str | None]) -> dict[int, int]:
        """Edit targets {name: value} (None: not edited) -> {attribute position: value index};
        a UserError names the unknown attribute or value and lists the valid ones."""
        out = {}
        for name, value in wanted.items():
            if value is not None:
                j = self.position(name)
                out[j] = self.attributes[j].index(value)
        return out

    def decode(self, indices: Sequence[int]) -> dict[str, str | None]:
        return {a.name: (a.values[int(i)] if int(i) != MISSING else None)
                for a, i in zip(self.attributes, indices)}

    def onehot(self, indices):
        """[B, M] value indices -> [B, N] concatenated one-hots (a missing value: an all-zero block)."""
        import torch

        indices = torch.as_tensor(indices, dtype=torch.long)
        out = torch.zeros(indices.shape[0], self.n_values)
        for j, offset in enumerate(self.offsets):
            known = indices[:, j] != MISSING
            rows = torch.nonzero(known).squeeze(1)
            out[rows, offset + indices[rows, j]] = 1.0
        return out

    def condition(self, indices, manipulated):
        """[B, M] target value indices and [B] (or int) manipulated attribute -> m = [B, N + M]."""
        import torch

        indices = torch.as_tensor(indices, dtype=torch.long)
        r = torch.zeros(indices.shape[0], self.n_attributes)
        manipulated = torch.as_tensor(manipulated, dtype=torch.long).expand(indices.shape[0])
        r[torch.arange(indices.shape[0]), manipulated] = 1.0
        return torch.cat([self.onehot(indices), r], dim=1)


SYNTHETIC_COLORS = (
    "red", "blue", "white", "pink", "orange", "black", "brown", "green", "purple",
    "yellow", "khaki", "gray", "beige", "navy", "silver", "olive", "multicolor",
)
SYNTHETIC_SLEEVES = ("long", "three-quarter", "short", "sleeveless")
SYNTHETIC_PATTERNS = ("solid", "striped", "dotted", "checked")
SYNTHETIC_NECKLINES = ("crew", "v", "scoop")

# Every attribute the synthetic renderer knows; the default schema uses color and sleeve, as
# DeepFashion-Synthesis does. pattern and neckline are visible attributes the way Shopping100k has
# more of them: the harder setting labels all four (docs/usage.md, "The harder setting"). Outside a
# schema, pattern is solid and the neckline a nuisance of the scene.
SYNTHETIC_ATTRIBUTES = {
    "color": SYNTHETIC_COLORS,
    "sleeve": SYNTHETIC_SLEEVES,
    "pattern": SYNTHETIC_PATTERNS,
    "neckline": SYNTHETIC_NECKLINES,
}
HARD_SETTING = ("color", "sleeve", "pattern", "neckline")
DEFAULT_SCHEMA = Schema.from_dict({k: SYNTHETIC_ATTRIBUTES[k] for k in ("color", "sleeve")})


def synthetic_schema(names: Sequence[str] = ("color", "sleeve")) -> Schema:
    """The synthetic schema restricted to `names`, in the renderer's order."""
    unknown = [n for n in names if n not in SYNTHETIC_ATTRIBUTES]
    if unknown:
        raise UserError(
            f"unknown synthetic attribute {unknown[0]!r}; valid: {', '.join(SYNTHETIC_ATTRIBUTES)}"
        )
    return Schema.from_dict({k: v for k, v in SYNTHETIC_ATTRIBUTES.items() if k in names})
