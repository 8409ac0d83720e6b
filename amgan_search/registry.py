"""The models the project ships, and the one way to load any model by name or directory.

Shipped models live in `amgan_search/models/<name>/`, each produced by the project's own commands
(see the MODEL_CARD.md beside it). `load_model` takes a shipped name or a model directory and
returns the loaded model of the kind asked for: it checks the directory's files against their
SHA256SUMS, checks its config.json field by field, builds the network the config describes, and
refuses weights that do not fit it.

Names: a str naming a shipped model of the kind ("cam" / "eval" for classifiers, "amgan" /
"stargan" for editors, "adde" for the disentangled embedding) means that model unless a directory
of that name exists here; a Path, or any other str, is a model directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from amgan_search.checkpoint import (CONFIG, MODEL_FILES, WEIGHTS, data_digests, load_model_dir,
                                     record_sums, verify_dir, weights_sha256)
from amgan_search.errors import UserError
from amgan_search.integrity import SUMS, file_sha256, read_sums, verify
from amgan_search.io import read_json
from amgan_search.outputs import MARKER, mark

# Models the project ships, each produced by its own command (see the MODEL_CARD.md beside it).
SHIPPED_DIR = Path(__file__).resolve().parent / "models"
SHIPPED = {
    "classifier-cam": "the CNN+CAM classifier AMGAN trains against (attention truth, perceptual features, embedder)",
    "classifier-eval": "the separate evaluation classifier that grades edits",
    "amgan": "AMGAN trained on the synthetic catalog",
    "stargan": "the StarGAN baseline, same budget",
    "adde": "the disentangled attribute embedding with its attribute memory (ADDE)",
}
KINDS = ("classifier", "editor", "encoder")
# Short names per kind -> the shipped model they mean; None is the kind's default.
_NAMES = {
    "classifier": {None: "classifier-cam", "cam": "classifier-cam", "eval": "classifier-eval"},
    "editor": {None: "amgan", "amgan": "amgan", "stargan": "stargan"},
    "encoder": {None: "adde", "adde": "adde"},
}
# Image sides a model may declare: below 16 px a ResNet or G has nothing left to see; above
# 2048 px one image no longer fits the memory these networks are sized for.
SIZES = (16, 2048)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    """A model's config.json alone, checked field by field (no weights read): what a caller looks
    at before loading."""
    path = model_dir(name_or_dir, kind)
    config = read_json(path / CONFIG)
    check_config(config, _CONFIG_KIND[kind], path / CONFIG)
    return config


def load_model(name_or_dir: str | Path | None, kind: str, device: str | None = None,
               classifier=None):
    """A shipped model by name, or a model directory, loaded as `kind`, frozen, in eval mode.

    kind "classifier": an AttributeClassifier (None: the shipped CNN+CAM classifier; device None:
    the CPU). kind "editor": the GAN editor, `editors.Manipulator` (None: the shipped AMGAN;
    device None: cuda when torch sees it), with the classifier that reads its queries: the one its
    config records when that directory exists here, else the shipped classifier-cam, each checked
    against the sha256 the config records, unless `classifier` gives one. kind "encoder": the
    disentangled embedding, `nets.adde.DisentangledEncoder` (None: the shipped one; device None:
    the CPU), on the trunk its config records, found and checked the same way.
    """
    from amgan_search.device import pick_device

    path = model_dir(name_or_dir, kind)
    if kind == "classifier":
        return _load_classifier(path, "cpu" if device is None else pick_device(device))
    if kind == "encoder":
        return _load_encoder(path, "cpu" if device is None else pick_device(device))
    return _load_editor(path, pick_device(device), classifier)


# -- config.json, field by field ----------------------------------------------------------------

_CONFIG_KIND = {"classifier": "classifier", "editor": "amgan", "encoder": "adde"}


def check_config(config, kind: str, where: Path) -> None:
    """A model's config.json checked before a network is built from it: every field it needs, of
    the type and in the range the network takes; a one-line UserError naming file and field."""
    from amgan_search.nets.amgan import ATTENTIONS, UPSAMPLINGS
    from amgan_search.nets.classifier import ARCHS, OUTPUT_STRIDES, ROLES

    if not isinstance(config, dict):
        raise UserError(f"{where}: not a JSON object")
    if config.get("kind") != kind:
        raise UserError(f"{where}: holds a {config.get('kind', 'unknown')!r} model, not a {kind!r} model")
    n_values = _schema(config, where)
    _whole(config, "size", where, *SIZES)
    if kind == "classifier":
        _choice(config, "arch", where, ARCHS)
        _choice(config, "output_stride", where, OUTPUT_STRIDES)
        _choice(config, "role", where, ROLES)
        return
    if kind == "adde":
        from amgan_search.nets.adde import RESTS

        _whole(config, "chunk_dim", where, 1, 4096)
        _whole(config, "hidden", where, 1, 65536)
        _choice(config, "rest", where, RESTS)
        _classifier_record(config, where, "trunk")
        return
    if config["size"] % 4:
        raise UserError(f"{where}: 'size' must be a multiple of 4 (G's two down-samplings), "
                        f"not {config['size']}")
    _whole(config, "c_dim", where, 1, 10 ** 6)
    if config["c_dim"] != n_values:
        raise UserError(f"{where}: 'c_dim' {config['c_dim']} differs from the schema's "
                        f"{n_values} values and attributes")
    _whole(config, "conv_dim", where, 1, 4096)
    _whole(config, "repeat_num", where, 0, 64)
    _whole(config, "att_conv_dim", where, 1, 4096, optional=True)
    _choice(config, "attention", where, ATTENTIONS)
    _choice(config, "upsample", where, UPSAMPLINGS, optional=True)
    _classifier_record(config, where)


def _show(value) -> str:
    return json.dumps(value)[:40]


def _whole(config: dict, key: str, where: Path, lo: int, hi: int, optional: bool = False) -> None:
    if key not in config:
        if optional:
            return
        raise UserError(f"{where}: no {key!r} entry")
    value = config[key]
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise UserError(f"{where}: {key!r} must be a whole number from {lo} to {hi}, "
                        f"not {_show(value)}")


def _choice(config: dict, key: str, where: Path, choices, optional: bool = False) -> None:
    if key not in config:
        if optional:
            return
        raise UserError(f"{where}: no {key!r} entry")
    value = config[key]
    if isinstance(value, bool) or not any(value == c and type(value) is type(c) for c in choices):
        raise UserError(f"{where}: {key!r} must be one of {', '.join(map(str, choices))}, "
                        f"not {_show(value)}")


def _schema(config: dict, where: Path) -> int:
    """Check the schema entry ({attribute: [values]}); returns its condition length N + M."""
    schema = config.get("schema")
    if "schema" not in config:
        raise UserError(f"{where}: no 'schema' entry")
    if not isinstance(schema, dict) or not schema:
        raise UserError(f"{where}: 'schema' must map attribute names to lists of values, "
                        f"not {_show(schema)}")
    for name, values in schema.items():
        if not name or not isinstance(values, list) or not values \
                or not all(isinstance(v, str) and v for v in values) or len(set(values)) < len(values):
            raise UserError(f"{where}: 'schema' attribute {name!r} must list distinct "
                            f"non-empty value names, not {_show(values)}")
    return sum(len(v) for v in schema.values()) + len(schema)


def _classifier_record(config: dict, where: Path, key: str = "classifier") -> None:
    record = config.get(key)
    if record is None:
        return
    if not isinstance(record, dict) or not isinstance(record.get("path"), (str, type(None))) \
            or not (record.get("sha256") is None or _SHA256.match(str(record["sha256"]))):
        raise UserError(f"{where}: {key!r} must be {{\"path\": ..., \"sha256\": <64 hex "
                        f"digits>}}, not {_show(record)}")


# -- loading -------------------------------------------------------------------------------------

def read_model(path: str | Path, kind: str, vouched: bool = False) -> tuple[dict, dict]:
    """(config, tensors) of a model directory holding a `kind` ("classifier" or "amgan") model:
    files checked against SHA256SUMS (unless `vouched`), config.json field by field."""
    path = Path(path)
    config, tensors = load_model_dir(path, kind=kind, vouched=vouched)
    check_config(config, kind, path / CONFIG)
    return config, tensors


def _fill(module, tensors: dict, path: Path):
    """Load weights into a freshly built module, strictly; frozen, in eval mode."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path / WEIGHTS}: weights do not fit the config "
                        f"({str(exc).splitlines()[0]})") from None
    return module.eval().requires_grad_(False)


def _load_classifier(path: Path, device: str, vouched: bool = False):
    from amgan_search.nets.classifier import AttributeClassifier

    config, tensors = read_model(path, "classifier", vouched)
    return _fill(AttributeClassifier.from_config(config), tensors, path).to(device)


def _edit_net(path: Path, vouched: bool = False):
    """(config, the generator EditNet with its weights) of an AMGAN model directory."""
    from amgan_search.nets.amgan import EditNet

    config, tensors = read_model(path, "amgan", vouched)
    net_tensors = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
    return config, _fill(EditNet.from_config(config), net_tensors, path)


def _load_editor(path: Path, device: str, classifier=None):
    from amgan_search.editors import Manipulator
    from amgan_search.schema import Schema

    config, net = _edit_net(path)
    schema = Schema.from_dict(config["schema"])
    if classifier is None:
        classifier = _load_classifier(_trained_with(path, config), device)
    if classifier.schema.to_dict() != schema.to_dict():
        raise UserError(f"{path}: the classifier's attributes and values "
                        f"{classifier.schema.to_dict()} differ from the model's")
    return Manipulator(net.to(device), schema, config["size"], classifier.to(device).eval(), config,
                       device)


def _load_encoder(path: Path, device: str, vouched: bool = False):
    """The disentangled embedding: its heads and memory on the trunk its config records."""
    from amgan_search.nets.adde import DisentangledEncoder
    from amgan_search.schema import Schema

    config, tensors = read_model(path, "adde", vouched)
    trunk = _load_classifier(_trained_with(path, config, "trunk"), device)
    encoder = DisentangledEncoder(trunk, Schema.from_dict(config["schema"]), config["chunk_dim"],
                                  config["hidden"], config["rest"])
    own = {k: v for k, v in encoder.state_dict().items() if k.startswith("trunk.")}
    _fill(encoder, {**own, **tensors}, path)
    encoder.config = config
    return encoder.to(device)


def _trained_with(path: Path, config: dict, key: str = "classifier") -> Path:
    """The folder of the classifier a model was trained with (an AMGAN's CNN+CAM network, the
    disentangled embedding's trunk): the one its config records when it is here, else the
    shipped classifier-cam; checked against the sha256 the config records, so a damaged or
    different classifier never reads the queries silently."""
    record = config.get(key) or {}
    recorded = record.get("path")
    here = Path(recorded) if recorded and (Path(recorded) / WEIGHTS).is_file() else None
    folder = model_dir(here, "classifier")
    if record.get("sha256"):
        actual = weights_sha256(folder)
        if actual != record["sha256"]:
            raise UserError(f"{path / CONFIG} records the classifier it was trained with as sha256 "
                            f"{record['sha256'][:16]}..., but {folder / WEIGHTS} has "
                            f"{actual[:16]}... (damaged, or another classifier)")
    return folder


# -- recording digests ---------------------------------------------------------------------------

class Unvouched(UserError):
    """Weights nothing records a checksum for: `checksum_model` records sums over them only when
    the caller trusts them as they are."""

    def __init__(self, path: Path):
        super().__init__(f"{path / WEIGHTS}: nothing records its checksum (no {SUMS}, no digest "
                         "in its metadata, not a shipped model's weights), so damage could not be "
                         "told from the weights; record sums over them only if you trust them")
        self.path = path


def checksum_model(path: str | Path, check: bool = False, trust_unsummed: bool = False) -> str:
    """Record SHA256SUMS (and the model marker) for a model folder that has none; `check` only
    verifies. Damage is never blessed: the weights must first match what records their checksum
    (the data digest in their own metadata, or the registry's record of a shipped model whose
    config.json this is), then load whole (config checked, weights fitting their network). Weights
    nothing records are refused (`Unvouched`) unless `trust_unsummed`. Returns what was done and
    what was checked, in words."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise UserError(f"{path}: not a model folder (no {CONFIG})")
    if check:
        verify(path, MODEL_FILES, required=True)
        return "verified"
    if (path / SUMS).is_file():
        verify_dir(path, MODEL_FILES)
        return f"verified (its {SUMS} was there)"
    vouched = _recorded_checksum(path)
    if vouched is None and not trust_unsummed:
        raise Unvouched(path)
    config = read_json(path / CONFIG)
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind == "classifier":
        _load_classifier(path, "cpu", vouched=True)
    elif kind == "amgan":
        _edit_net(path, vouched=True)
    elif kind == "adde":
        _load_encoder(path, "cpu", vouched=True)
    else:
        raise UserError(f"{path / CONFIG}: 'kind' must be classifier, amgan or adde, not "
                        f"{_show(kind)}")
    record_sums(path, MODEL_FILES)
    if not (path / MARKER).exists():
        mark(path, "model")
    if vouched is None:
        return f"{SUMS} written over the weights as they are (nothing recorded their checksum)"
    return f"{SUMS} written (the weights match {vouched}; the model loads whole)"


def _recorded_checksum(path: Path) -> str | None:
    """What records the checksum of a folder's weights, in words, once they are checked against
    it (a mismatch is a one-line UserError); None when nothing records one."""
    weights = path / WEIGHTS
    recorded, actual = data_digests(weights)
    if recorded is not None:
        if recorded != actual:
            raise UserError(f"{weights}: damaged (the sha256 of its tensor data differs from the "
                            "one its metadata records); its sums are not recorded")
        return "the sha256 of their data that their metadata records"
    config_sha = file_sha256(path / CONFIG)
    for name in SHIPPED:
        sums = read_sums(SHIPPED_DIR / name) or {}
        if sums.get(CONFIG) == config_sha and WEIGHTS in sums:
            if file_sha256(weights) != sums[WEIGHTS]:
                raise UserError(f"{weights}: damaged (its config.json is the shipped {name}'s, "
                                f"whose weights the registry records as sha256 "
                                f"{sums[WEIGHTS][:16]}...); its sums are not recorded")
            return f"the shipped {name}'s sha256 the registry records"
    return None


# CNN graders: classifiers that read an edited image's attributes, named, several at once (the
# `--graders` options): comma-separated `eval` / `cam` (the shipped classifiers), `NAME=DIR`, or a
# bare model folder (named after the folder); `none` for no CNN grader. A grader reads attributes
# by name (`nets.classifier.read_attribute`), so one trained on more attributes grades a generator
# of fewer. The grader that is no network (`metrics.truth`) is read beside these, never as one.
SHIPPED_GRADERS = ("eval", "cam")


def parse_graders(spec: str | None) -> list[tuple[str, str]]:
    """"eval,indep=runs/g" -> [("eval", "eval"), ("indep", "runs/g")]; "none" or "" -> []."""
    out: list[tuple[str, str]] = []
    for part in (p.strip() for p in (spec or "").split(",")):
        if not part or part == "none":
            continue
        if "=" in part:
            name, path = (s.strip() for s in part.split("=", 1))
            if not name or not Path(path).is_dir():
                raise UserError(f"grader {part!r}: expected NAME=DIR with an existing model folder")
            out.append((name, path))
        elif part in SHIPPED_GRADERS:
            out.append((part, part))
        elif Path(part).is_dir():
            out.append((Path(part).resolve().name, part))
        else:
            raise UserError(f"unknown grader {part!r}; valid: eval, cam, a model folder, "
                            "NAME=DIR, or none")
    names = [n for n, _ in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"grader name {dup!r} appears twice")
    return out


def load_graders(spec: str | None, device: str | None = None) -> dict:
    """{name: classifier} for a spec (`parse_graders`), each loaded frozen."""
    return {name: load_model(path, "classifier", device) for name, path in parse_graders(spec)}
