"""The editors: what turns a query image into the image that is searched for.

Every editor has one batch interface, `edit_batch(x, labels, attribute, target, items=None) ->
(x*, alpha)` (see `Editor`), so the benchmark runs all methods through the same call:
`Manipulator` (a trained AMGAN or baseline), `IdentityEditor` (the unedited query, "real") and
`OracleEditor` (the synthetic renderer's true edit). The GAN editor also edits whole photos,
`Manipulator.edit(image, only_region=..., **targets)`, which the query path and `edit` use.

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
from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np
import torch

from amgan_search.errors import UserError
from amgan_search.images import (fit_square, load_image, save_image, to_tensor, to_uint8,
                                 unfit_square)
from amgan_search.nets.amgan import EditNet
from amgan_search.outputs import claim_pngs
from amgan_search.schema import Schema

# Region names for region-specific editing (paper, Sec. 4): the attention mask of this
# manipulation, kept above REGION_THRESHOLD, confines the other edits.
REGION_ALIASES = {"sleeves": "sleeve=sleeveless"}
REGION_THRESHOLD = 0.9


class Editor(Protocol):
    """The one batch interface of every editor."""

    size: int | None  # the side x must have (None: any side)
    schema: Schema | None

    def edit_batch(self, x: torch.Tensor, labels: torch.Tensor, attribute: int,
                   target: torch.Tensor, items: Sequence[str] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] in [0,1], its current labels [B,M], the attribute's position and the
        target value index ([B] or one for all) -> (x* [B,3,S,S] in [0,1], alpha [B,1,S,S]).
        `items`: the catalog item behind each row of x (only the oracle needs it)."""
        ...


class IdentityEditor:
    """No edit ("real" in the benchmark): the query as it is, attention zero everywhere."""

    size = None

    def __init__(self, schema: Schema | None = None):
        self.schema = schema

    def edit_batch(self, x, labels, attribute, target, items=None):
        return x, torch.zeros_like(x[:, :1])


class OracleEditor:
    """The synthetic renderer's true edit: each row's scene drawn again with the target value.

    It needs the scene behind each row of x, so `edit_batch` takes the rows' catalog item ids as
    `items`. x* is drawn at x's side and returned on x's device; alpha marks the pixels where x*
    differs from x (on a catalog drawn at that side: exactly the pixels the true edit changed).
    """

    size = None

    def __init__(self, scenes: Mapping[str, object], schema: Schema):
        self.scenes = {str(k): v for k, v in scenes.items()}
        self.schema = schema

    @classmethod
    def from_catalog(cls, catalog, schema: Schema | None = None) -> "OracleEditor":
        """The scenes of an imported synthetic catalog (a `catalog.Catalog`)."""
        from amgan_search.synthetic import load_scene_table

        root = Path(catalog.root)
        if catalog.format != "synthetic" or not (root / "catalog.csv").is_file():
            raise UserError(f"{catalog.path}: the oracle method needs a synthetic catalog "
                            "(format 'synthetic' with catalog.csv in its root)")
        return cls({str(row.id): row.scene for row in load_scene_table(root)},
                   schema or catalog.schema)

    def edit_batch(self, x, labels, attribute, target, items=None):
        from amgan_search.synthetic import render

        if items is None or len(items) != x.size(0):
            raise ValueError("oracle: edit_batch needs items, the catalog item behind each row of x")
        attr, size = self.schema.attributes[attribute], x.shape[-1]
        values = torch.as_tensor(target, dtype=torch.long).expand(x.size(0)).tolist()
        images = []
        for item_id, v in zip(items, values):
            if str(item_id) not in self.scenes:
                raise UserError(f"oracle: item {item_id!r} has no scene in the synthetic catalog")
            image, _ = render(self.scenes[str(item_id)].with_attributes(**{attr.name: attr.values[v]}),
                              size)
            images.append(fit_square(np.asarray(image, dtype=np.uint8), size)[0])
        x_star = to_tensor(images).to(x.device)
        return x_star, (x_star != x).any(dim=1, keepdim=True).float()


class Manipulator:
    """The GAN editor: a generator (G; SaGAN's A), its schema and size, and the classifier that
    reads the queries' current attributes.

    `precision` ("fp32", "bf16", or "auto": bf16 where the device has it natively; see
    `device.resolve_precision`) is how the generator and the classifier run; fp32 by default, so
    evaluations give the same numbers on every machine; the query path asks for "auto". The
    classifier may be None for a generator that needs no CAM when the caller gives the current
    attributes (a training run grading its checkpoints); `predict` then refuses.
    """

    def __init__(self, net: EditNet, schema: Schema, size: int, classifier, config: dict,
                 device: str = "cpu", precision: str = "fp32"):
        self.net, self.schema, self.size = net.eval(), schema, int(size)
        self.classifier, self.config, self.device = classifier, config, torch.device(device)
        self.use_precision(precision)

    def use_precision(self, precision: str) -> "Manipulator":
        """Run the generator and the classifier in `precision` from now on (modules changed in place)."""
        from amgan_search.device import FastPath, prepare_module, resolve_precision

        self.precision = resolve_precision(precision, str(self.device))
        prepare_module(self.net, self.precision)
        prepare_module(self.classifier, self.precision)
        self._generate = FastPath(self.net, self.precision, str(self.device))
        self._read = (FastPath(self.classifier.predict, self.precision, str(self.device))
                      if self.classifier is not None else None)
        return self

    def compile_steps(self, batch_sizes=(1,)) -> list:
        """What `device.compile_paths` compiles for this editor: the classifier that reads the
        photo and the generator, each warmed up at these batch sizes (1 and 2 cover every size:
        the second compilation is for any batch size)."""
        s, m = self.size, len(self.schema.attributes)

        def read(b):
            return lambda: self.predict(torch.rand(b, 3, s, s, device=self.device))

        def generate(b):
            return lambda: self.edit_batch(torch.rand(b, 3, s, s), torch.zeros(b, m, dtype=torch.long),
                                           0, torch.zeros(b, dtype=torch.long))

        return [("the classifier reading the photo", self._read, [read(b) for b in batch_sizes]),
                ("the generator", self._generate, [generate(b) for b in batch_sizes])]

    # -- targets -----------------------------------------------------------------------------

    def check_targets(self, targets: Mapping[str, str | None]) -> dict[int, int]:
        """{name: value} -> {attribute position: value index}; UserError lists the valid ones."""
        return self.schema.targets(targets)

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
        from amgan_search.nets.classifier import classifier_input

        if self._read is None:
            raise UserError("this editor has no classifier to read the photo's attributes; "
                            "give them")
        with torch.no_grad():
            return self._read(classifier_input(self.classifier, x))[0].cpu()

    @torch.no_grad()
    def edit_batch(self, x: torch.Tensor, labels: torch.Tensor, attribute: int,
                   target: torch.Tensor, items: Sequence[str] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,3,S,S] in [0,1] at the model size, current labels [B,M] -> (x*, alpha [B,1,S,S]).

        The condition takes the current labels with the one attribute set to the target (see
        `Editor`; `items` is not needed)."""
        from amgan_search.nets.classifier import compute_cam

        x = x.to(self.device).float()
        target = torch.as_tensor(target, dtype=torch.long).expand(x.size(0)).cpu()
        trg = torch.as_tensor(labels, dtype=torch.long).clone().cpu()
        trg[:, attribute] = target
        c = self.schema.condition(trg, attribute).to(self.device)
        cam = (compute_cam(self.classifier, x, attribute, target)
               if self.net.attention == "cam" else None)
        x_star, alpha, _ = self._generate(x, c, cam)
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
        return compose(image, out, keep, masks, box)


def edit_files(editor: "Manipulator", paths: Sequence[str | Path], out: str | Path,
               targets: Mapping[str, str], only_region: str | None = None
               ) -> Iterator[tuple[Path, Path]]:
    """Edit image files: writes OUT/<stem>_edit.png and OUT/<stem>_mask.png (the edits' combined
    attention; names from `edit_outputs`) and yields (input, edited file) as each is done. Every
    output name is claimed and every file read before any work."""
    if only_region is not None:
        editor.parse_region(only_region)
    outputs = edit_outputs(paths, out)
    pictures = [(Path(p), load_image(p)) for p in paths]
    for (path, image), (target, mask) in zip(pictures, outputs):
        edited, masks = editor.edit(image, only_region=only_region, **targets)
        save_image(target, edited, made_by="edit")
        save_image(mask, combine_masks(masks), made_by="edit")
        yield path, target


def edit_outputs(paths: Sequence[str | Path], out: str | Path) -> list[tuple[Path, Path]]:
    """The (edit, mask) files of each input: OUT/<stem>_edit.png, OUT/<stem>_mask.png, distinct.

    A stem an earlier input took gets a number, in command-line order (photo.png, photo.jpg and
    a/photo.png -> photo, photo-2, photo-3), rather than the input's folders under OUT: inputs may
    be absolute or outside the working folder, and two formats of one photo share a folder.
    Names are compared ignoring case (macOS and Windows folders) and never name an input. An
    existing file of a chosen name is replaced only when it is a PNG edit wrote.
    """
    out, inputs = Path(out), {Path(p).resolve() for p in paths}
    taken: set[str] = set()
    pairs = []
    for p in paths:
        stem, n = Path(p).stem, 1
        while True:
            name = stem if n == 1 else f"{stem}-{n}"
            pair = (out / f"{name}_edit.png", out / f"{name}_mask.png")
            if not any(f.name.lower() in taken or f.resolve() in inputs for f in pair):
                break
            n += 1
        taken.update(f.name.lower() for f in pair)
        pairs.append(pair)
    claim_pngs([f for pair in pairs for f in pair], "edit")
    return pairs


def combine_masks(masks: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """An edit's masks as `Manipulator.edit` and `compose` return them (float HxW in [0, 1], all
    of the photo's shape) -> one uint8 HxW mask, their maximum scaled to 0-255; None for none.
    Masks of another shape or with more axes are a caller's error, never guessed at."""
    if not masks:
        return None
    arrays = [np.asarray(m, dtype=np.float32) for m in masks.values()]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError("combine_masks: expected float HxW masks of one shape, got "
                         + ", ".join(f"{k} {a.shape}" for k, a in zip(masks, arrays)))
    return (np.clip(np.max(arrays, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)


def compose(image: np.ndarray, out: torch.Tensor, keep: torch.Tensor, masks: Mapping, box
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The edit at the photo's own resolution: the model-size edit `out` [1,3,S,S] blended into
    the photo by the edits' combined attention (1 - keep), so pixels no edit touched keep their
    full detail; and each mask [1,1,S,S] mapped back to the photo's size."""
    shape = image.shape[:2]
    edited = unfit_square(to_uint8(out)[0], box, shape).astype(np.float32)
    combined = _unfit_mask((1 - keep)[0, 0].cpu().numpy(), box, shape)[..., None]
    result = combined * edited + (1 - combined) * image.astype(np.float32)
    return (np.clip(result + 0.5, 0, 255).astype(np.uint8),
            {k: _unfit_mask(m[0, 0].cpu().numpy(), box, shape) for k, m in masks.items()})


def edit_photos(editor: Editor, photos: Sequence[np.ndarray], labels: torch.Tensor,
                attribute: int, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One edit of a batch of photos at their own resolution, the way `Manipulator.edit` edits a
    query: each uint8 HxWx3 photo (all of one shape) fit to the editor's size, edited there
    (`Editor.edit_batch`), and composed back into the photo by `compose`, so pixels the attention
    leaves alone keep the photo's full detail. Returns (x* [B,3,H,W] in [0, 1], the composed uint8
    a catalog would store; alpha [B,1,H,W], the attention at the photo's size)."""
    photos = [np.asarray(p, dtype=np.uint8) for p in photos]
    side = editor.size or max(photos[0].shape[:2])  # an editor of any size edits the photo as is
    squares, boxes = zip(*(fit_square(p, side) for p in photos))
    x_star, alpha = editor.edit_batch(to_tensor(list(squares)), labels, attribute, target)
    x_star, alpha = x_star.detach().float().cpu(), alpha.detach().float().cpu()
    edited, masks = zip(*(compose(photo, z[None], 1 - a[None], {"alpha": a[None]}, box)
                          for photo, z, a, box in zip(photos, x_star, alpha, boxes)))
    return to_tensor(list(edited)), torch.from_numpy(np.stack([m["alpha"] for m in masks]))[:, None]


def _unfit_mask(mask: np.ndarray, box, shape) -> np.ndarray:
    """A float mask at the model size -> float32 in [0, 1] at the input's size."""
    return np.clip(unfit_square(mask.astype(np.float32), box, shape), 0, 1).astype(np.float32)


# -- an editor of fewer attributes than the index ------------------------------------------------

def check_sub_schema(inner: Schema, outer: Schema) -> None:
    """A UserError unless every attribute of `inner` (a model's) is one of `outer` (an index's)
    with the same values in the same order: the value indices a label holds must mean the same
    value to both, or the model would be told a wrong current attribute."""
    own = outer.to_dict()
    for name, values in inner.to_dict().items():
        if name not in own:
            raise UserError(f"the model's attribute {name!r} is not one of the index's "
                            f"({', '.join(outer.names)})")
        if own[name] != values:
            raise UserError(f"the model's {name} values ({', '.join(values)}) differ from the "
                            f"index's ({', '.join(own[name])})")


class SubSchemaEditor:
    """An editor of some of the index's attributes, seen through the index's schema.

    The benchmark hands every editor labels [B, M] and attribute positions in the index's schema
    (the harder setting's four attributes); a model trained on fewer (color, sleeve) takes its
    own columns, picked by name, and its own position of the edited attribute.
    """

    def __init__(self, inner: Editor, schema: Schema):
        check_sub_schema(inner.schema, schema)
        self.inner, self.schema, self.size = inner, schema, inner.size
        self.columns = [schema.position(name) for name in inner.schema.names]

    def edit_batch(self, x, labels, attribute, target, items=None):
        name = self.schema.names[attribute]
        if name not in self.inner.schema.names:
            raise UserError(f"the model cannot edit {name!r}; it edits "
                            f"{', '.join(self.inner.schema.names)}")
        labels = torch.as_tensor(labels, dtype=torch.long)[:, self.columns]
        return self.inner.edit_batch(x, labels, self.inner.schema.position(name), target,
                                     items=items)


def for_schema(editor: Editor, schema: Schema) -> Editor:
    """`editor` as an editor of the index's `schema`: itself when the schemas are equal, else a
    `SubSchemaEditor` (a UserError when the editor's attributes are not a part of the schema's)."""
    if editor.schema is None or editor.schema.to_dict() == schema.to_dict():
        return editor
    return SubSchemaEditor(editor, schema)
