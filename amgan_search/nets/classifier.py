"""The CNN+CAM attribute classifier: a ResNet (`nets.resnet`: torchvision's, with its parameter
names) with one linear head per attribute.

One network serves three roles in AMGAN (paper, Sec. 3): its class activation map for the target
value is the attention ground truth a*, its conv5 and avg-pool features are the perceptual
features, and its avg-pool features, L2-normalised, are the retrieval embedding. A second instance
trained with its own seed and depth (`role="eval"`) grades the edits.

CAM (Zhou et al. 2016) needs the logits to be a linear function of globally average-pooled conv
maps, so each head is a single Linear on the pooled features: the head's weight row for one value,
applied to every position of the last conv maps, is that value's activation map.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from amgan_search.errors import UserError
from amgan_search.images import resize_batch
from amgan_search.nets.resnet import resnet
from amgan_search.schema import MISSING, Schema

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
ROLES = ("cam", "eval")
OUTPUT_STRIDES = (8, 16, 32)
# The smallest last-conv maps worth using. Our choice, from measurement: a CAM drawn from a 4x4 map
# overlaps the synthetic garment with IoU 0.39 (see the classifier-cam model card), too coarse
# an attention truth, so the CAM network keeps at least 8x8; the evaluation classifier draws no CAM
# and keeps at least 4x4 (2x2 maps lose thin sleeves).
MIN_CAM_MAP = 8
MIN_EVAL_MAP = 4

# ImageNet statistics: the torchvision weights `--init imagenet` loads were trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_output_stride(size: int, role: str = "cam") -> int:
    """The output stride a classifier at `size` gets when none is given.

    A standard ResNet divides its input by 32, so at 64x64 the last conv map is 2x2. The stride is
    halved (32 -> 16 -> 8) until the map is at least MIN_CAM_MAP wide for the CAM network (stride 8
    at 64x64, 16 at 128x128) and MIN_EVAL_MAP for the evaluation classifier (16 at 64x64, 32 at
    128x128). A smaller stride costs time (stride 8 at 64x64 is about 2-3x stride 16 on a CPU).
    """
    floor = MIN_EVAL_MAP if role == "eval" else MIN_CAM_MAP
    stride = 32
    while size // stride < floor and stride > min(OUTPUT_STRIDES):
        stride //= 2
    return stride


def _resnet(arch: str, output_stride: int) -> nn.Module:
    """A ResNet without its ImageNet fc, with the output stride reduced as asked."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise UserError(f"output stride {output_stride} not supported; valid: 8, 16, 32")
    # Stages that lose their stride: layer4 for 16, layer3 and layer4 for 8.
    unstrided = {32: [], 16: ["layer4"], 8: ["layer3", "layer4"]}[output_stride]
    bottleneck = arch not in ("resnet18", "resnet34")
    if bottleneck:
        # Bottleneck blocks support dilation, which keeps the receptive field of the strided
        # network (and so the meaning of ImageNet weights) while keeping the map larger.
        net = resnet(arch, replace_stride_with_dilation=[
            False, "layer3" in unstrided, "layer4" in unstrided])
    else:
        # BasicBlock has no dilation: the first block's stride is simply set to 1 (its 3x3 conv
        # and its 1x1 downsample), so the stage sees a finer grid with a smaller receptive field.
        net = resnet(arch)
        for name in unstrided:
            block = getattr(net, name)[0]
            block.conv1.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
    del net.fc, net.avgpool
    return net


class AttributeClassifier(nn.Module):
    """ResNet trunk -> conv5 maps -> global average pool -> one Linear head per attribute.

    Inputs are float RGB in [0, 1], NCHW; ImageNet normalisation happens inside.
    """

    def __init__(self, schema: Schema, arch: str = "resnet18", size: int = 64,
                 output_stride: int | None = None, role: str = "cam", seed: int | None = None,
                 **extra):
        super().__init__()
        if role not in ROLES:
            raise UserError(f"unknown classifier role {role!r}; valid: {', '.join(ROLES)}")
        if output_stride is None:
            output_stride = default_output_stride(size, role)
        self.schema = schema
        self.size = int(size)
        self.config = {
            "kind": "classifier", "role": role, "arch": arch, "size": self.size,
            "output_stride": int(output_stride), "schema": schema.to_dict(), "seed": seed,
            **extra,
        }
        self.backbone = _resnet(arch, int(output_stride))
        self.embed_dim = 2048 if arch not in ("resnet18", "resnet34") else 512
        self.config["embed_dim"] = self.embed_dim
        self.heads = nn.ModuleList(nn.Linear(self.embed_dim, len(a.values))
                                   for a in schema.attributes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, config: dict) -> "AttributeClassifier":
        known = {"kind", "schema", "arch", "size", "output_stride", "role", "seed", "embed_dim"}
        extra = {k: v for k, v in config.items() if k not in known}
        return cls(Schema.from_dict(config["schema"]), arch=config["arch"], size=config["size"],
                   output_stride=config["output_stride"], role=config["role"],
                   seed=config.get("seed"), **extra)

    @property
    def role(self) -> str:
        return self.config["role"]

    # -- the surface -------------------------------------------------------------------------

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv maps ("conv5"), [B, C, h, w]."""
        b = self.backbone
        x = (x - self.mean) / self.std
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of conv5, [B, C]."""
        return self.features(x).mean(dim=(2, 3))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The retrieval embedding: pooled features, L2-normalised, float32 [B, C]."""
        return F.normalize(self.pooled(x).float(), dim=1)

    def logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per attribute, in schema order."""
        return self.forward_all(x)[2]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_all(x)[2]

    def forward_all(self, x: torch.Tensor):
        """(conv5 maps, pooled, logits per attribute) from one pass: what the perceptual loss needs."""
        maps = self.features(x)
        pooled = maps.mean(dim=(2, 3))
        return maps, pooled, [head(pooled) for head in self.heads]

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(value indices LongTensor [B, M], their softmax probabilities FloatTensor [B, M])."""
        with torch.no_grad():
            probs = [torch.softmax(z.float(), dim=1) for z in self.forward(x)]
        best = [p.max(dim=1) for p in probs]
        return (torch.stack([b.indices for b in best], dim=1),
                torch.stack([b.values for b in best], dim=1))

    def cam(self, x: torch.Tensor, attribute, value) -> torch.Tensor:
        """Class activation map of one attribute value, [B, 1, H, W] in [0, 1], no gradient.

        `attribute` is a name or an index; `value` a value name, an index, or a LongTensor [B]
        (one target value per sample, as in GAN training). The map is the head's weight row for
        the value applied to every position of conv5 (the bias is a constant, so it is left out),
        then ReLU, bilinear upsampling to the input size, and division by each image's maximum.
        Our choice, where Zhou et al.'s code subtracts each map's minimum first: a* is the CAM of a
        target value the input usually does not have, whose strongest (negative) evidence lies on
        the garment itself; min-max scaling turns that minimum into 0 and the background into the
        attention truth, and an AMGAN trained on it spread its attention over the whole image.
        ReLU keeps only the evidence for the value. A map with no positive evidence stays all zero
        (the maximum is clamped to 1e-12, not divided by).
        """
        j = attribute if isinstance(attribute, int) else self.schema.position(attribute)
        if not 0 <= j < len(self.heads):
            raise UserError(f"attribute index {j} out of range; the schema has {len(self.heads)}")
        attr = self.schema.attributes[j]
        batch = x.shape[0]
        if isinstance(value, str):
            value = attr.index(value)
        index = torch.as_tensor(value, dtype=torch.long, device=x.device).reshape(-1)
        if index.numel() == 1:
            index = index.expand(batch)
        if index.numel() != batch:
            raise ValueError(f"cam: {index.numel()} target values for a batch of {batch}")
        if bool(((index < 0) | (index >= len(attr.values))).any()):
            raise UserError(f"{attr.name} value index out of range 0..{len(attr.values) - 1}"
                            f" ({MISSING} means missing and has no map)")
        with torch.no_grad():
            maps = self.features(x)
            weight = self.heads[j].weight[index].to(maps.dtype)  # [B, C]
            cam = torch.einsum("bc,bchw->bhw", weight, maps).unsqueeze(1).float().relu()
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
            cam = cam / cam.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
            return cam.clamp_(0.0, 1.0)


def classifier_input(classifier, x: torch.Tensor) -> torch.Tensor:
    """x resized to the classifier's training size when that differs from the GAN's."""
    size = (getattr(classifier, "config", None) or {}).get("size")
    return resize_batch(x, size) if size else x


def compute_cam(classifier, x: torch.Tensor, attribute: int, value: torch.Tensor) -> torch.Tensor:
    """a*: the frozen classifier's CAM of the target value on the input x, at x's resolution.

    The paper's text leaves open on which image the CAM is taken; we take it on the input x: it
    is fixed for the update (not a target that moves with G), costs one forward, and marks where
    the classifier looks for this attribute on this garment.
    """
    with torch.no_grad():
        cam = classifier.cam(classifier_input(classifier, x), attribute, value.to(x.device))
    return resize_batch(cam, x.shape[-1], antialias=False).float().clamp(0, 1)


def classify_images(model: AttributeClassifier, paths, batch_size: int = 64) -> list[dict]:
    """Image files -> [{path, attributes: {name: {value, probability}}}], read and run in batches.

    Each image is fitted into the classifier's square the way catalog images are; probabilities
    are rounded to 4 decimals.
    """
    from amgan_search.images import fit_square, load_image, to_tensor

    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        squares = [fit_square(load_image(p), model.size)[0] for p in batch]
        indices, probs = model.predict(to_tensor(squares))
        for path, idx, prob in zip(batch, indices.tolist(), probs.tolist()):
            results.append({"path": str(path), "attributes": {
                a.name: {"value": a.values[i], "probability": round(p, 4)}
                for a, i, p in zip(model.schema.attributes, idx, prob)}})
    return results


def classifier_digest(path: str | os.PathLike) -> str:
    """sha256 of a classifier's model.safetensors (a directory or the file), so an index built with
    one embedder can refuse queries embedded by another. A directory's is the one its SHA256SUMS
    records once checked, so a load that already verified the weights reads them no second time."""
    from amgan_search.checkpoint import weights_sha256
    from amgan_search.integrity import file_sha256

    path = Path(path)
    if path.is_dir():
        return weights_sha256(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    return file_sha256(path)


def read_attribute(classifier, x, attribute: str) -> list[str | None]:
    """The grader's reading of `attribute` on images x [B,3,S,S] in [0, 1] (any size: resized to
    the grader's own): one value name per image, or None for every image when the grader does
    not know the attribute."""
    names = classifier.schema.names
    if attribute not in names:
        return [None] * len(x)
    j = names.index(attribute)
    values = classifier.schema.attributes[j].values
    device = next(classifier.parameters()).device
    indices, _ = classifier.predict(classifier_input(classifier, x.float()).to(device))
    return [values[int(i)] for i in indices[:, j].tolist()]
