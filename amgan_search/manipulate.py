"""The manipulator: a trained AMGAN (or baseline) edits a garment photo toward target attributes.

The condition m needs every attribute's current value, not only the edited one, so the CNN+CAM
classifier predicts the query's attributes first. Several targets are applied one after another in
schema order (color before sleeve in the default schema), each edit's output the next one's input,
the way the paper chains single-attribute manipulations.

Images of any size and aspect ratio: `images.fit_square` scales the longer side to the model size
and pads with white (catalog backgrounds are white), and the result is mapped back with
`unfit_square`. The final picture is composed at the input's own resolution: the combined attention
of the edits, upsampled, blends the upsampled edit into the original photo, so pixels the model
leaves alone keep their full detail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from . import checkpoint as ckpt
from .amgan import EditNet
from .errors import UserError
from .images import fit_square, to_tensor, to_uint8, unfit_square
from .schema import Schema

# Region names for region-specific editing (paper, Sec. 4): the attention mask of this
# manipulation, kept above REGION_THRESHOLD, confines the other edits.
REGION_ALIASES = {"sleeves": "sleeve=sleeveless"}
REGION_THRESHOLD = 0.9


class Manipulator:
    """A generator (G; SaGAN's A), its schema and size, and the classifier that reads queries."""

    def __init__(self, net: EditNet, schema: Schema, size: int, classifier, config: dict,
                 device: str = "cpu"):
        self.net, self.schema, self.size = net.eval(), schema, int(size)
        self.classifier, self.config, self.device = classifier, config, torch.device(device)

    @classmethod
    def load(cls, path: str | Path | None = None, method: str = "amgan", device: str | None = None,
             classifier=None) -> "Manipulator":
        """A model directory (None: the shipped `method` model) and the classifier it records.

        The classifier is the one named in the model's config when that directory exists here,
        else the shipped classifier-cam; pass `classifier` to use another.
        """
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = Path(path) if path is not None else ckpt.shipped_model(method)
        config, tensors = ckpt.load_model_dir(path, kind="amgan")
        schema = Schema.from_dict(config["schema"])
        # Models written before the up-sampling was recorded used transposed convolutions.
        net = EditNet(config["c_dim"], config["conv_dim"], config["repeat_num"],
                      config["attention"], config.get("att_conv_dim"),
                      config.get("upsample", "deconv"))
        net_tensors = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            net.load_state_dict(net_tensors, strict=True)
        except RuntimeError as exc:
            raise UserError(f"{path / ckpt.WEIGHTS}: weights do not fit the config "
                            f"({str(exc).splitlines()[0]})") from None
        net.requires_grad_(False)
        if classifier is None:
            from .classifier import load_classifier

            recorded = (config.get("classifier") or {}).get("path")
            use = recorded if recorded and (Path(recorded) / ckpt.WEIGHTS).is_file() else None
            classifier = load_classifier(use, role="cam", device=device)
        if classifier.schema.to_dict() != schema.to_dict():
            raise UserError(f"{path}: the classifier's attributes and values "
                            f"{classifier.schema.to_dict()} differ from the model's")
        return cls(net.to(device), schema, config["size"], classifier.to(device).eval(), config,
                   device)

    # -- targets -----------------------------------------------------------------------------

    def check_targets(self, targets: Mapping[str, str | None]) -> dict[int, int]:
        """{name: value} -> {attribute position: value index}; UserError lists the valid ones."""
        out = {}
        for name, value in targets.items():
            if value is None:
                continue
            j = self.schema.position(name)
            out[j] = self.schema.attributes[j].index(value)
        return out

    def parse_region(self, spec: str) -> tuple[int, int]:
        """'sleeves' or 'attribute=value' -> (attribute position, value index)."""
        spec = REGION_ALIASES.get(spec, spec)
        if "=" not in spec:
            raise UserError(f"unknown region {spec!r}; use one of {', '.join(REGION_ALIASES)} "
                            "or attribute=value")
        name, value = (s.strip() for s in spec.split("=", 1))
        j = self.schema.position(name)
        return j, self.schema.attributes[j].index(value)

    # -- editing -----------------------------------------------------------------------------

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's reading of the current attributes, [B, M]."""
        from .train_amgan import classifier_input

        with torch.no_grad():
            return self.classifier.predict(classifier_input(self.classifier, x))[0].cpu()

    @torch.no_grad()
    def edit_batch(self, x: torch.Tensor, labels: torch.Tensor, attribute: int,
                   target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] in [0,1] at the model size, current labels [B,M] -> (x*, alpha [B,1,S,S])."""
        from .train_amgan import compute_cam

        x = x.to(self.device).float()
        target = torch.as_tensor(target, dtype=torch.long).expand(x.size(0)).cpu()
        trg = torch.as_tensor(labels, dtype=torch.long).clone().cpu()
        trg[:, attribute] = target
        c = self.schema.condition(trg, attribute).to(self.device)
        cam = (compute_cam(self.classifier, x, attribute, target)
               if self.net.attention == "cam" else None)
        x_star, alpha, _ = self.net(x, c, alpha=cam)
        return x_star.clamp(0, 1), alpha

    def edit(self, image: np.ndarray, only_region: str | None = None,
             **targets: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """uint8 HxWx3 -> (edited uint8 HxWx3, {attribute: attention mask float32 HxW in [0,1]}).

        `only_region` ('sleeves', or 'attribute=value'): the region-specific edit of the paper; the
        region's mask is returned under the key "region".
        """
        wanted = self.check_targets(targets)
        if not wanted:
            raise UserError(f"no target attribute given; valid: {', '.join(self.schema.names)}")
        image = np.asarray(image, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"edit: expected an HxWx3 image, got shape {image.shape}")
        square, box = fit_square(image, self.size)
        x = to_tensor(square).to(self.device)
        labels = self.predict(x)
        region = None
        if only_region is not None:
            j, v = self.parse_region(only_region)
            _, alpha_r = self.edit_batch(x, labels, j, torch.tensor([v]))
            region = (alpha_r > REGION_THRESHOLD).float()
        masks, keep = {}, torch.ones_like(x[:, :1])
        out = x
        for j in sorted(wanted):
            x_star, alpha = self.edit_batch(out, labels, j, torch.tensor([wanted[j]]))
            if region is not None:
                alpha = alpha * region
                x_star = region * x_star + (1 - region) * out
            out = x_star
            labels = labels.clone()
            labels[:, j] = wanted[j]
            keep = keep * (1 - alpha)
            masks[self.schema.attributes[j].name] = alpha
        if region is not None:
            masks["region"] = region
        # Compose at the input's resolution: where the edits' combined attention is 0 the
        # original pixels stay untouched.
        shape = image.shape[:2]
        edited = unfit_square(to_uint8(out)[0], box, shape).astype(np.float32)
        combined = _unfit_mask((1 - keep)[0, 0].cpu().numpy(), box, shape)[..., None]
        result = combined * edited + (1 - combined) * image.astype(np.float32)
        return (np.clip(result + 0.5, 0, 255).astype(np.uint8),
                {k: _unfit_mask(m[0, 0].cpu().numpy(), box, shape) for k, m in masks.items()})


def _unfit_mask(mask: np.ndarray, box, shape) -> np.ndarray:
    """A float mask at the model size -> float32 in [0, 1] at the input's size."""
    return np.clip(unfit_square(mask.astype(np.float32), box, shape), 0, 1).astype(np.float32)
