"""The methods a query can be answered with: an editor of pixels, then a space of vectors.

| method | editor (`editors`) | space (`index.spaces`) |
| --- | --- | --- |
| `real` | none: the query as it is | the index's embedding |
| `oracle` | the renderer's true edit | the index's embedding |
| `amgan`, `stargan`, a GAN folder | the GAN | the index's embedding |
| `prototype` | none | the index's embedding moved by class means |
| `adde`, an ADDE folder | none | the disentangled embedding, moved by its memory |
| `hybrid`, `NAME=GAN+ADDE` | the GAN (the preview) | the edit's disentangled embedding, its |
|  |  | edited chunks set from the memory |

`parse_methods` reads a --methods spec, `Method.editable` says from config files alone which
attributes a method edits (`check_methods` refuses one that cannot edit the queries' before
anything runs), and `Method.load` gives what runs: the editor and the space with its index (an
index embedded with the method's own encoder is built beside the base index on first use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

from amgan_search.editors import Editor, IdentityEditor, OracleEditor, check_sub_schema, for_schema
from amgan_search.errors import UserError
from amgan_search.schema import Schema

KINDS = ("real", "oracle", "editor", "prototype", "feature", "hybrid")
# Names that mean a shipped model (or two), and what they are.
NAMED = {"real": ("real", None, None), "oracle": ("oracle", None, None),
         "amgan": ("editor", "amgan", None), "stargan": ("editor", "stargan", None),
         "prototype": ("prototype", None, None), "adde": ("feature", None, "adde"),
         "hybrid": ("hybrid", "amgan", "adde")}
# The method a query takes when none is named: docs/feature-space.md says why (the best measured
# on the shipped catalog, and it shows the edit).
DEFAULT = "amgan"
HELP = ("real, oracle (synthetic catalogs), amgan, stargan, prototype, adde, hybrid, a model "
        "folder (a GAN or an ADDE embedding), NAME=DIR, or NAME=GAN+ADDE (a hybrid; each a "
        "folder or a shipped model's name)")


class Loaded(NamedTuple):
    """What answers a method's queries: the editor of pixels and the space searched."""

    editor: Editor
    space: object  # index.spaces: IndexSpace, PrototypeSpace or MemorySpace


@dataclass
class Method:
    """A named method: its kind and the model folders behind it (None: the shipped ones)."""

    name: str
    kind: str  # one of KINDS
    editor_path: str | None = None   # the GAN's folder (editor, hybrid); None: shipped by name
    encoder_path: str | None = None  # the ADDE folder (feature, hybrid); None: shipped `adde`

    @property
    def edits_pixels(self) -> bool:
        """Whether the method makes an image the shopper can see (and the graders read)."""
        return self.kind in ("oracle", "editor", "hybrid")

    def editor_dir(self) -> str | Path:
        """The GAN's folder (the shipped one by the method's name)."""
        from amgan_search.registry import model_dir

        return model_dir(self.editor_path or NAMED.get(self.name, (None, "amgan"))[1] or "amgan",
                         "editor")

    def encoder_dir(self) -> str | Path:
        """The disentangled embedding's folder (the shipped `adde` by default)."""
        from amgan_search.registry import model_dir

        return model_dir(self.encoder_path or "adde", "encoder")

    def load_editor(self, catalog, schema: Schema, device: str) -> Editor:
        """The method's editor of the index's `schema`."""
        from amgan_search.registry import load_model

        if self.kind == "oracle":
            return OracleEditor.from_catalog(catalog, schema)
        if not self.edits_pixels:
            return IdentityEditor(schema)
        where = self.editor_dir()
        editor = load_model(where, "editor", device)
        try:
            return for_schema(editor, schema)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def load_space(self, searcher, embedder, device: str, progress: bool = True):
        """The space the method searches, over the base index `searcher` (embedded by `embedder`)."""
        from amgan_search.index.embed import load_embedder
        from amgan_search.index.search import Searcher
        from amgan_search.index.spaces import (IndexSpace, MemorySpace, PrototypeSpace,
                                               space_index)

        if self.kind == "prototype":
            return PrototypeSpace(searcher, embedder)
        if self.kind not in ("feature", "hybrid"):
            return IndexSpace(searcher, embedder)
        own = load_embedder(self.encoder_dir(), device=device)
        where = space_index(searcher.dir, own, progress=progress)
        own_searcher = searcher if Path(where) == Path(searcher.dir) else Searcher(where)
        return MemorySpace(own_searcher, own, searcher.schema,
                           mode="set" if self.kind == "hybrid" else "arith")

    def load(self, catalog, searcher, embedder, device: str, progress: bool = True) -> Loaded:
        return Loaded(self.load_editor(catalog, searcher.schema, device),
                      self.load_space(searcher, embedder, device, progress))

    def editable(self, schema: Schema) -> list[str]:
        """The attributes of the index's `schema` the method can edit, from config.json files
        alone (nothing loaded): a UserError when a model's attributes are not a part of the
        index's."""
        from amgan_search.registry import model_config

        can = set(schema.names)
        parts = []
        if self.kind in ("editor", "hybrid"):
            parts.append((self.editor_dir(), "editor"))
        if self.kind in ("feature", "hybrid"):
            parts.append((self.encoder_dir(), "encoder"))
        for where, kind in parts:
            own = Schema.from_dict(model_config(where, kind)["schema"])
            try:
                check_sub_schema(own, schema)
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
            can &= set(own.names)
        return [n for n in schema.names if n in can]


def _model_kind(path: Path) -> str:
    """'editor' or 'feature' by what a model folder's config.json says it is."""
    from amgan_search.checkpoint import CONFIG
    from amgan_search.io import read_json

    config = read_json(path / CONFIG) if (path / CONFIG).is_file() else None
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind == "amgan":
        return "editor"
    if kind == "adde":
        return "feature"
    raise UserError(f"{path}: not a GAN or an ADDE model folder (its config.json kind is "
                    f"{kind!r})")


def _folder(path: str, part: str, shipped: bool = False) -> Path:
    """The model folder `path` names; with `shipped`, a shipped model's name is one too."""
    from amgan_search.registry import SHIPPED, shipped_model

    if shipped and path.strip() in SHIPPED:
        return shipped_model(path.strip())
    folder = Path(path.strip())
    if not folder.is_dir():
        raise UserError(f"{part!r}: {folder} is no model folder")
    return folder.resolve()


def parse_method(part: str) -> Method:
    """One entry of a --methods spec (`HELP` lists the forms)."""
    if "=" in part:
        name, path = (s.strip() for s in part.split("=", 1))
        if not name:
            raise UserError(f"{part!r}: expected NAME=DIR")
        if "+" in path:
            gan, adde = (_folder(p, part, shipped=True) for p in path.split("+", 1))
            if _model_kind(gan) != "editor" or _model_kind(adde) != "feature":
                raise UserError(f"{part!r}: a hybrid is NAME=GAN+ADDE")
            return Method(name, "hybrid", str(gan), str(adde))
        folder = _folder(path, part)
    elif part in NAMED:
        kind, _, _ = NAMED[part]
        return Method(part, kind)
    elif Path(part).is_dir():
        folder = Path(part).resolve()
        name = folder.name
    else:
        raise UserError(f"unknown method {part!r}; valid: {HELP}")
    kind = _model_kind(folder)
    return Method(name, kind, **({"editor_path": str(folder)} if kind == "editor"
                                 else {"encoder_path": str(folder)}))


def parse_methods(spec: str | Sequence[str]) -> list[Method]:
    """"real,amgan,adde,mine=runs/x" -> methods (a bare folder is named after itself)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    methods = [parse_method(p) for p in (s.strip() for s in parts) if p]
    if not methods:
        raise UserError("no method given")
    names = [m.name for m in methods]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"method name {dup!r} appears twice")
    return methods


def resolve_method(method=None, model: str | Path | None = None) -> Method:
    """A Method from a name or spec entry, a Method, or, when none is given, the GAN folder
    `model` or the default method."""
    if isinstance(method, Method):
        return method
    if method is not None:
        return parse_method(str(method))
    if model is not None:
        return Method(Path(model).name, "editor", editor_path=str(model))
    return parse_method(DEFAULT)


def check_methods(methods: Sequence[Method], edited: Sequence[str], schema: Schema) -> None:
    """Refuse, before anything runs, a method that cannot edit one of the edited attributes."""
    for method in methods:
        can = method.editable(schema)
        lacking = [a for a in edited if a not in can]
        if lacking:
            raise UserError(f"method {method.name!r} cannot edit {', '.join(lacking)} (it edits "
                            f"{', '.join(can)}); choose the attributes to edit among those")
