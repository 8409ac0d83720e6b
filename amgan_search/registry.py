"""The models the project ships, and the one way to load any model by name or directory.

Shipped models live in `amgan_search/models/<name>/`, each produced by the project's own commands
(see the MODEL_CARD.md beside it). `load_model` takes a shipped name or a model directory and
returns the loaded model of the kind asked for: it reads the directory's config.json, builds the
network the config describes, and refuses weights that do not fit it.

Names: a str naming a shipped model of the kind ("cam" / "eval" for classifiers, "amgan" /
"stargan" for editors) means that model unless a directory of that name exists here; a Path, or
any other str, is a model directory.
"""

from __future__ import annotations

from pathlib import Path

from amgan_search.checkpoint import CONFIG, WEIGHTS, load_model_dir
from amgan_search.errors import UserError
from amgan_search.io import read_json

# Models the project ships, each produced by its own command (see the MODEL_CARD.md beside it).
SHIPPED_DIR = Path(__file__).resolve().parent / "models"
SHIPPED = {
    "classifier-cam": "the CNN+CAM classifier AMGAN trains against (attention truth, perceptual features, embedder)",
    "classifier-eval": "the separate evaluation classifier that grades edits",
    "amgan": "AMGAN trained on the synthetic catalog",
    "stargan": "the StarGAN baseline, same budget",
}
KINDS = ("classifier", "editor")
# Short names per kind -> the shipped model they mean; None is the kind's default.
_NAMES = {
    "classifier": {None: "classifier-cam", "cam": "classifier-cam", "eval": "classifier-eval"},
    "editor": {None: "amgan", "amgan": "amgan", "stargan": "stargan"},
}
# config.json entries a model of each kind cannot be rebuilt without.
_REQUIRED = {
    "classifier": ("schema", "arch", "size", "output_stride", "role"),
    "amgan": ("schema", "size", "c_dim", "conv_dim", "repeat_num", "attention"),
}


def shipped_model(name: str) -> Path:
    """Path of a shipped model directory, or a UserError that says how to produce it."""
    if name not in SHIPPED:
        raise UserError(f"unknown shipped model {name!r}; known: {', '.join(SHIPPED)}")
    path = SHIPPED_DIR / name
    if not (path / WEIGHTS).is_file():
        raise UserError(
            f"the shipped model {name!r} ({SHIPPED[name]}) is not in {path}; "
            "train one and pass its directory instead"
        )
    return path


def model_dir(name_or_dir: str | Path | None, kind: str) -> Path:
    """The directory behind a shipped name (a directory of that name wins) or a model directory."""
    if kind not in KINDS:
        raise UserError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")
    names = _NAMES[kind]
    if (name_or_dir is None or isinstance(name_or_dir, str)) and name_or_dir in names \
            and not (name_or_dir and Path(name_or_dir).is_dir()):
        return shipped_model(names[name_or_dir])
    return Path(name_or_dir)


def model_config(name_or_dir: str | Path | None, kind: str) -> dict:
    """A model's config.json alone (no weights read): what a caller checks before loading."""
    return read_json(model_dir(name_or_dir, kind) / CONFIG)


def load_model(name_or_dir: str | Path | None, kind: str, device: str | None = None,
               classifier=None):
    """A shipped model by name, or a model directory, loaded as `kind`, frozen, in eval mode.

    kind "classifier": an AttributeClassifier (None: the shipped CNN+CAM classifier; device None:
    the CPU). kind "editor": the GAN editor, `editors.Manipulator` (None: the shipped AMGAN;
    device None: cuda when torch sees it), with the classifier that reads its queries: the one its
    config records when that directory exists here, else the shipped classifier-cam, unless
    `classifier` gives one.
    """
    path = model_dir(name_or_dir, kind)
    if kind == "classifier":
        return _load_classifier(path, device or "cpu")
    from amgan_search.device import pick_device

    return _load_editor(path, pick_device(device), classifier)


def _read(path: Path, kind: str) -> tuple[dict, dict]:
    """(config, tensors) of a model directory holding a `kind` model with every entry it needs."""
    config, tensors = load_model_dir(path, kind=kind)
    for key in _REQUIRED[kind]:
        if key not in config:
            raise UserError(f"{path / CONFIG}: no {key!r} entry")
    return config, tensors


def _fill(module, tensors: dict, path: Path):
    """Load weights into a freshly built module, strictly; frozen, in eval mode."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path / WEIGHTS}: weights do not fit the config "
                        f"({str(exc).splitlines()[0]})") from None
    return module.eval().requires_grad_(False)


def _load_classifier(path: Path, device: str):
    from amgan_search.nets.classifier import AttributeClassifier

    config, tensors = _read(path, "classifier")
    return _fill(AttributeClassifier.from_config(config), tensors, path).to(device)


def _load_editor(path: Path, device: str, classifier=None):
    from amgan_search.editors import Manipulator
    from amgan_search.nets.amgan import EditNet
    from amgan_search.schema import Schema

    config, tensors = _read(path, "amgan")
    schema = Schema.from_dict(config["schema"])
    net_tensors = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
    net = _fill(EditNet.from_config(config), net_tensors, path)
    if classifier is None:
        recorded = (config.get("classifier") or {}).get("path")
        use = Path(recorded) if recorded and (Path(recorded) / WEIGHTS).is_file() else None
        classifier = _load_classifier(model_dir(use, "classifier"), device)
    if classifier.schema.to_dict() != schema.to_dict():
        raise UserError(f"{path}: the classifier's attributes and values "
                        f"{classifier.schema.to_dict()} differ from the model's")
    return Manipulator(net.to(device), schema, config["size"], classifier.to(device).eval(), config,
                       device)
