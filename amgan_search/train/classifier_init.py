"""A classifier's initial weights: from scratch, torchvision's ImageNet weights, or one of ours."""

from __future__ import annotations

from pathlib import Path

import torch

from amgan_search.checkpoint import WEIGHTS
from amgan_search.errors import UserError
from amgan_search.nets.classifier import AttributeClassifier
from amgan_search.registry import read_model


def imagenet_weights_path(arch: str) -> tuple[Path, str]:
    """(where torchvision's ImageNet weights for `arch` are expected in the torch hub cache, their URL)."""
    import torchvision

    enum = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
            "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}[arch]
    url = getattr(torchvision.models, enum).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, url


def check_init(init: str, arch: str) -> None:
    """Fail before any data is read when the initial weights are not where they should be."""
    if init == "scratch":
        return
    if init == "imagenet":
        path, url = imagenet_weights_path(arch)
        if not path.is_file():
            # Never downloads: the machine this runs on may have no network, and a silent
            # download inside a training command is a surprise.
            raise UserError(f"{path}: ImageNet weights for {arch} not found; download {url} "
                            f"and put the file there (the directory follows $TORCH_HOME)")
        return
    if not (Path(init) / WEIGHTS).is_file():
        raise UserError(f"{init}: not 'scratch', 'imagenet' or a classifier directory "
                        f"with {WEIGHTS}")


def initialise(model: AttributeClassifier, init: str) -> str:
    """Load the initial weights `init` names into `model`; returns what was loaded, for the log."""
    check_init(init, model.config["arch"])
    if init == "scratch":
        return "scratch"
    if init == "imagenet":
        path, _ = imagenet_weights_path(model.config["arch"])
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt or unsafe file
            raise UserError(f"{path}: unreadable ImageNet weights ({exc})") from None
        # The ImageNet classifier (fc) has no place here: our heads start fresh.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise UserError(f"{path}: not {model.config['arch']} weights "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return f"imagenet:{path.name}"
    config, tensors = read_model(init, "classifier")
    if config.get("arch") != model.config["arch"]:
        raise UserError(f"{init}: holds a {config.get('arch')} classifier, not a "
                        f"{model.config['arch']}")
    own = model.state_dict()
    # Heads carry over only when they predict the same values in the same order.
    same_schema = config.get("schema") == model.schema.to_dict()
    keep = {k: v for k, v in tensors.items()
            if k in own and own[k].shape == v.shape and (same_schema or not k.startswith("heads."))}
    model.load_state_dict(keep, strict=False)
    return f"dir:{init}" + ("" if same_schema else " (backbone only: another schema)")
