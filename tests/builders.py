"""What the test files share: data builders (a tiny CSV catalog, a tiny classifier and
manipulator, an index over them), the CLI runner and the check of a one-line refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from amgan_search.images import save_image

ROOT = Path(__file__).resolve().parents[1]  # the repository
COLORS = ("red", "green", "blue")
SLEEVES = ("long", "short")
RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_catalog(root: Path, n: int = 24, size: int = 32, seed: int = 0,
                 ids: range | None = None) -> Path:
    """A CSV catalog of n noisy images (color = garment color, sleeve = a band's length) -> DB."""
    from amgan_search.catalog import import_catalog

    rng = np.random.default_rng(seed)
    folder = root / "catalog"
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = ["id,path,color,sleeve,split"]
    for i in ids if ids is not None else range(n):
        color, sleeve = COLORS[i % 3], SLEEVES[(i // 3) % 2]
        img = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
        img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = RGB[color]
        img[size // 4:(size // 2 if sleeve == "short" else 7 * size // 8), : size // 4] = RGB[color]
        save_image(folder / "img" / f"{i}.png", img)
        rows.append(f"item{i},img/{i}.png,{color},{sleeve},{'test' if i % 4 == 0 else 'train'}")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    (folder / "schema.json").write_text(json.dumps({"color": list(COLORS), "sleeve": list(SLEEVES)}))
    db = root / "catalog.db"
    import_catalog("csv", folder, db, progress=False)
    return db


def make_classifier(path: Path, seed: int = 0, role: str = "cam", size: int = 32) -> Path:
    """A tiny real AttributeClassifier (random weights) saved as a model directory."""
    import torch

    from amgan_search.checkpoint import save_model_dir
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import Schema

    torch.manual_seed(seed)
    model = AttributeClassifier(Schema.from_dict({"color": list(COLORS), "sleeve": list(SLEEVES)}),
                                arch="resnet18", size=size, role=role, seed=seed)
    save_model_dir(path, model.config, model.state_dict())
    return path


def make_manipulator(path: Path, classifier_dir: Path, seed: int = 0, size: int = 32) -> Path:
    """A tiny real (untrained) AMGAN-shaped manipulator saved as a model directory."""
    import torch

    from amgan_search.checkpoint import save_model_dir
    from amgan_search.nets.amgan import EditNet
    from amgan_search.schema import Schema

    schema = Schema.from_dict({"color": list(COLORS), "sleeve": list(SLEEVES)})
    torch.manual_seed(seed)
    net = EditNet(schema.condition_dim, conv_dim=4, repeat_num=1, attention="generator",
                  upsample="deconv")  # the config records none: what that means
    config = {"kind": "amgan", "method": "amgan", "schema": schema.to_dict(), "size": size,
              "c_dim": schema.condition_dim, "conv_dim": 4, "repeat_num": 1,
              "attention": "generator", "classifier": {"path": str(classifier_dir)}}
    save_model_dir(path, config, {f"net.{k}": v for k, v in net.state_dict().items()})
    return path


def index_from_vectors(out: Path, vectors: np.ndarray, labels: np.ndarray, items, schema,
                       index_type: str = "flat", digest: str = "x") -> dict:
    """An index folder over given vectors and metadata rows (no catalog, no embedder)."""
    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.index_dir import item_records

    return build_from_vectors(out, vectors, labels, item_records(items, labels, schema), schema,
                              {"path": None, "digest": digest}, index_type=index_type)


def tiny_world(root: Path) -> dict:
    """A tiny catalog, classifier, manipulator and an index over them: what the CLI tests use."""
    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder

    db = make_catalog(root)
    cam = make_classifier(root / "cam")
    build_index(db, root / "index", load_embedder(cam, device="cpu"), workers=0, progress=False)
    return {"root": root, "db": db, "cam": cam, "gan": make_manipulator(root / "gan", cam),
            "index": root / "index", "image": root / "catalog" / "img" / "4.png"}


def run(*args):
    """`amgan-search ARGS` in this process (arguments as strings); an exception that is no
    UserError propagates, so a crash fails the test with its traceback."""
    from click.testing import CliRunner

    from amgan_search.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_refused(result, *needles, alone: bool = False) -> str:
    """A CLI result that is exit 2 and one error line naming the needles (ours, or click's under
    its usage line), no traceback; `alone`: that line is all the command printed. The line."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    if alone:
        assert [line for line in result.output.splitlines() if line.strip()] == errors, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def tracked(*patterns: str) -> list[Path]:
    """The files git tracks under ROOT (as they are in the working tree); skips outside a checkout."""
    import subprocess

    import pytest

    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]
