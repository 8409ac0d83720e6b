"""The benchmark's methods: `real` (the unedited query), `oracle` (the synthetic renderer's true
edit) and the generators, each loaded as an `Editor` of the index's schema; `parse_methods` reads
the --methods spec and `check_methods` refuses, before anything runs, a method that cannot edit
an attribute the queries change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from amgan_search.editors import Editor, IdentityEditor, OracleEditor, check_sub_schema, for_schema
from amgan_search.errors import UserError
from amgan_search.schema import Schema


@dataclass
class Method:
    """`real` (unedited query), `oracle` (the synthetic renderer's true edit) or a manipulator."""

    name: str
    kind: str  # real | oracle | model
    path: str | None = None  # a model directory; None with kind model: the shipped `name`

    def load(self, catalog, schema: Schema, device: str) -> Editor:
        """The method's editor of the index's `schema`: the identity, the oracle of a synthetic
        catalog or a GAN (one of fewer attributes through `editors.for_schema`)."""
        from amgan_search.registry import load_model, shipped_model

        if self.kind == "real":
            return IdentityEditor(schema)
        if self.kind == "oracle":
            return OracleEditor.from_catalog(catalog, schema)
        editor = load_model(self.path or shipped_model(self.name), "editor", device)
        try:
            return for_schema(editor, schema)
        except UserError as exc:
            raise UserError(f"{self.path or self.name}: {exc}") from None

    def editable(self, schema: Schema) -> list[str]:
        """The attributes of the index's `schema` the method can edit, from the model's
        config.json alone (nothing loaded): a UserError when its attributes are not a part of
        the index's."""
        from amgan_search.registry import model_config, shipped_model

        if self.kind != "model":
            return schema.names
        where = self.path or shipped_model(self.name)
        own = Schema.from_dict(model_config(where, "editor")["schema"])
        try:
            check_sub_schema(own, schema)
        except UserError as exc:
            raise UserError(f"{self.path or self.name}: {exc}") from None
        return own.names


def parse_methods(spec: str | Sequence[str]) -> list[Method]:
    """"real,amgan,stargan,oracle,mine=runs/x,runs/y" -> methods (a bare folder is named after itself)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    methods = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if "=" in part:
            name, path = (s.strip() for s in part.split("=", 1))
            if not name or not Path(path).is_dir():
                raise UserError(f"{part!r}: expected NAME=DIR with an existing model folder")
            methods.append(Method(name, "model", str(Path(path).resolve())))
        elif part in ("real", "oracle"):
            methods.append(Method(part, part))
        elif part in ("amgan", "stargan"):
            methods.append(Method(part, "model"))
        elif Path(part).is_dir():
            methods.append(Method(Path(part).resolve().name, "model", str(Path(part).resolve())))
        else:
            raise UserError(f"unknown method {part!r}; valid: real, oracle, amgan, "
                            "stargan, a model folder, or NAME=DIR")
    if not methods:
        raise UserError("no method given")
    names = [m.name for m in methods]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"method name {dup!r} appears twice")
    return methods


def check_methods(methods: Sequence[Method], edited: Sequence[str], schema: Schema) -> None:
    """Refuse, before anything runs, a method that cannot edit one of the edited attributes."""
    for method in methods:
        can = method.editable(schema)
        lacking = [a for a in edited if a not in can]
        if lacking:
            raise UserError(f"method {method.name!r} cannot edit {', '.join(lacking)} (it edits "
                            f"{', '.join(can)}); choose the attributes to edit among those")
