"""The query pipeline: photo -> (edit) -> embed -> (manipulate the vector) -> FAISS top-k -> metadata.

One query image travels through its method (`index.methods`): `Retriever.query` checks the targets
against the index's schema; a method that edits pixels (a GAN, the hybrid's preview) has its
editor (`editors.Manipulator.edit`) fit it square at the generator's size, edit it and compose the
edit back at the photo's own resolution; the method's space (`index.spaces`) embeds the picture,
fitting it square at the embedder's size the way the catalog images were, and, for a method that
manipulates vectors (`prototype`, `adde`, the hybrid), reads the photo's current values from the
vector and moves it toward each target; its index's `Searcher.search` and `.results` find the rows
and join their metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from amgan_search.editors import combine_masks
from amgan_search.errors import UserError
from amgan_search.index.search import Hit, Searcher
from amgan_search.index.sheet import contact_sheet
from amgan_search.schema import Schema


@dataclass
class QueryResult:
    """One query: the input photo (uint8 HxWx3), its edit and combined attention mask (None when
    no pixel was edited), the targets applied ({} for none), the results in rank order and the
    name of the method that answered."""
    image: np.ndarray
    edited: np.ndarray | None
    mask: np.ndarray | None
    targets: dict[str, str]
    results: list[Hit]
    method: str = "amgan"


class Retriever:
    """image -> (edit) -> embed -> (manipulate) -> FAISS top-k -> metadata, by one method.
    Loads everything once (warm path).

    `method`: a name or `--methods` entry (`index.methods.parse_method`) or a Method; None: the
    default (`methods.DEFAULT`), or the GAN folder `model` where one is given. The oracle needs a
    catalog item, not a photo, so it answers no query here. `precision`: how the editor and the
    query embedding run, "auto" (bf16 where the device has it natively, else fp32), "fp32" (bit
    for bit the plain networks) or "bf16" (forced); see `device.resolve_precision`. An embedder or
    manipulator passed in is switched to it. The thread count is the caller's
    (`device.set_torch_threads`): it is the process's, not the retriever's.
    """

    def __init__(self, index_dir: str | Path, model: str | Path | None = None, device: str | None = None,
                 searcher: Searcher | None = None, embedder=None, manipulator=None,
                 precision: str = "auto", method=None, progress: bool = True):
        from amgan_search.device import resolve_precision
        from amgan_search.index.methods import resolve_method

        resolve_precision(precision)  # a bad name fails before anything is loaded
        self.method = resolve_method(method, model)
        if self.method.kind == "oracle":
            raise UserError("the oracle draws a catalog item's scene again: it answers the "
                            "benchmark's queries, not a photo's")
        self.searcher = searcher if searcher is not None else Searcher(index_dir)
        self.device = device
        self.embedder = embedder if embedder is not None else self.searcher.embedder(device=device)
        self.searcher.check_embedder(self.embedder)
        self.requested_precision = precision
        self.embedder.use_precision(precision)
        self._manipulator = manipulator.use_precision(precision) if manipulator is not None else None
        self._space = None
        self._catalog = None
        self.progress = progress
        self.compiled = False

    @property
    def precision(self) -> str:
        """The precision the query embedding runs in ("fp32" or "bf16")."""
        return self.space.embedder.precision

    @property
    def schema(self) -> Schema:
        return self.searcher.schema

    @property
    def space(self):
        """Where the method searches (`index.spaces`): loaded on first use (an index embedded
        with the method's own encoder is built beside the base index the first time)."""
        if self._space is None:
            from amgan_search.device import pick_device

            self._space = self.method.load_space(self.searcher, self.embedder,
                                                 pick_device(self.device), self.progress)
            self._space.embedder.use_precision(self.requested_precision)
        return self._space

    @property
    def manipulator(self):
        """The method's GAN, loaded on the first edit, so unedited searches never pay for it."""
        if self._manipulator is None:
            from amgan_search.registry import load_model

            if not self.method.edits_pixels:
                raise UserError(f"the method {self.method.name!r} edits no pixels: it has no "
                                "picture to show and no region to confine")
            self._manipulator = load_model(self.method.editor_dir(), "editor", device=self.device)
            self._manipulator.use_precision(self.requested_precision)
        return self._manipulator

    def compile(self, progress=None, batch_sizes=(1, 2)) -> bool:
        """Compile the classifier that reads the photo, the generator and the embedder with
        torch.compile, and warm them up at `batch_sizes` (1, and 2 for a graph of any batch size,
        as a server's micro-batches need; other shapes would run uncompiled rather than compile
        mid-request). For long-running processes:
        it takes from seconds to minutes. Set the thread count first: the generated kernels keep
        the count they were compiled with. One progress line per network through `progress`; on
        failure one warning line, and everything runs uncompiled. Returns whether compiled."""
        from amgan_search.device import compile_paths

        self.compiled = compile_paths(self.compile_steps(batch_sizes), progress)
        return self.compiled

    def compile_steps(self, batch_sizes=(1,)) -> list:
        """What `compile` compiles (`device.compile_paths` steps): the editor's networks when the
        method edits pixels, then the embedder of its space."""
        steps = self.space.embedder.compile_steps(batch_sizes)
        if self.method.edits_pixels:
            steps = self.manipulator.compile_steps(batch_sizes) + steps
        return steps

    def validate(self, targets: Mapping[str, str]) -> dict[str, str]:
        """Attribute names and values checked against the index's schema (UserError lists the valid ones)."""
        for name, value in targets.items():
            self.schema.attribute(name).index(value)
        return dict(targets)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 -> [1, d] in the method's space, through the same square fit the catalog
        images had."""
        return self.space.embedder.embed_image(image)

    def manipulate(self, vectors: np.ndarray, targets: Mapping[str, str]) -> np.ndarray:
        """The vectors moved toward every target, in schema order (`manipulate_rows`)."""
        return manipulate_rows(self.space, self.schema, vectors, [targets] * len(vectors))

    def edit(self, image: np.ndarray, targets: Mapping[str, str], only_region: str | None = None):
        """(edited uint8, combined attention mask uint8 HxW or None).

        The editor checks the targets against its own schema (the same one-line errors), so they
        are not checked here again.
        """
        edited, masks = self.manipulator.edit(image, only_region=only_region, **targets)
        return np.asarray(edited, dtype=np.uint8), combine_masks(masks)

    def query(self, image: np.ndarray, targets: Mapping[str, str] | None = None, k: int = 10,
              where: Mapping[str, str] | None = None, edit: bool = True,
              only_region: str | None = None) -> QueryResult:
        """Edit `image` toward `targets` (unless `edit` is off), embed it and search the top k."""
        targets = self.validate(targets or {})
        edited = mask = None
        if only_region and edit and not targets:
            raise UserError("--only-region: needs a target attribute to edit")
        if only_region and edit and not self.method.edits_pixels:
            raise UserError(f"--only-region: the method {self.method.name!r} edits no pixels, so "
                            "it has no region to confine the edit to")
        if edit and targets and self.method.edits_pixels:
            edited, mask = self.edit(image, targets, only_region)
        vectors = self.embed_image(edited if edited is not None else image)
        if edit:
            vectors = self.manipulate(vectors, targets)
        searcher = self.space.searcher
        rows, scores = searcher.search(vectors, k, where=where)
        results = searcher.results(rows, scores)[0]
        applied = targets if edit and (edited is not None or self.space.manipulates) else {}
        return QueryResult(image, edited, mask, applied, results, self.method.name)

    def read_result_image(self, path: str) -> np.ndarray | None:
        """A result's catalog image (through the catalog DB when it is there), None if unreadable."""
        from amgan_search.images import load_image

        if self._catalog is None:
            # Outside the try: a damaged or replaced DB is named, not shown as "unreadable".
            self._catalog = self.searcher.open_catalog()
        try:
            if self._catalog is not None:
                return self._catalog.read_image(path)
            return load_image(path)
        except UserError:
            return None

    def save(self, result: QueryResult, out: str | Path, inputs=()) -> str | None:
        """Write edited.png, mask.png and contact.png into `out`; the edited image's path (or None).
        Existing files of those names are replaced only when they are PNGs a query wrote and not
        one of `inputs` (the query photo's path); nothing else is touched."""
        from amgan_search.images import save_image
        from amgan_search.outputs import claim_pngs

        out = Path(out)
        claim_pngs([out / name for name in ("edited.png", "mask.png", "contact.png")], "query",
                   inputs)
        out.mkdir(parents=True, exist_ok=True)
        edited_path = None
        if result.edited is not None:
            edited_path = str((out / "edited.png").resolve())
            save_image(edited_path, result.edited, made_by="query")
        if result.mask is not None:
            save_image(out / "mask.png", result.mask, made_by="query")
        thumbs = [(self.read_result_image(r.path) if r.path else None,
                   f"#{r.rank} {r.id} {r.score:.3f}\n"
                   + " ".join(str(v) for v in r.attributes.values())) for r in result.results]
        sheet = contact_sheet(result.image, result.edited, result.mask, thumbs, result.targets)
        save_image(out / "contact.png", sheet, made_by="query")
        return edited_path


def manipulate_rows(space, schema: Schema, vectors: np.ndarray,
                    targets: Sequence[Mapping[str, str]]) -> np.ndarray:
    """Each row of `vectors` moved toward its own targets in the method's `space`, attribute by
    attribute in schema order, each step one `space.manipulate` over the rows that change that
    attribute (a batch of queries answers as each query alone). The space reads the current
    values from the vectors themselves: a shopper's photo comes without labels."""
    if not space.manipulates or not any(targets):
        return vectors
    vectors = np.array(vectors, dtype=np.float32)
    labels = space.read(vectors)
    for j, attribute in enumerate(schema.attributes):
        rows = [i for i, wanted in enumerate(targets) if attribute.name in wanted]
        if rows:
            values = np.array([attribute.index(targets[i][attribute.name]) for i in rows])
            vectors[rows] = space.manipulate(vectors[rows], labels[rows], j, values)
            labels[rows, j] = values
    return vectors
