"""What `amgan-search serve` holds and answers, apart from HTTP: one loaded retriever per method
offered (`index.methods`; they share the index, its embedder and a GAN two methods both use), the
micro-batcher that owns their models, the request checks and the JSON bodies of the API.

Every check a request can fail runs here, in the request's own thread, before the job is queued:
the method among those offered, targets and values against the index's schema, the attributes
the method edits and its editor's, the region, `k`, the `where` filter, and the upload through
the project's one image loader. So a batch holds only valid jobs and a bad request is a one-line
`UserError` (400; `NotFound` 404) that never reaches the models. Item images are found by item id
only, through the index's metadata and the catalog DB.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any, Mapping
from urllib.parse import quote

import numpy as np

from amgan_search.errors import UserError
from amgan_search.images import MAX_PIXELS, PixelBudget
from amgan_search.index.serve.batch_query import Job, Outcome, run_jobs
from amgan_search.index.serve.batching import MicroBatcher

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # 10 MiB: a large phone photo fits, a runaway upload does not
K_MAX = 100
ITEMS_LIMIT_MAX = 200
PREVIEW_SIDE = 512  # pictures sent back in JSON are shrunk to this long side: a 12 MP PNG is 20 MB
# A photo's long side is cut to this before the pipeline: the edit is composed at the photo's own
# resolution in float32, about 50 bytes a pixel, so a 40 MP upload alone would hold 2 GB and a batch
# of them more than the machine. The models see 64-256 px and the answer a 512 px preview, so only
# a photo over 1024 px differs from a local query, in the last digits of its scores.
WORK_SIDE = 1024
# Pixels of uploads decoded at once: one of the largest the loader takes (images.MAX_PIXELS), or
# three 12 MP photos. A 40 MP RGB upload is a 120 MB picture while it decodes, several times that
# with a palette or transparency on its way to RGB, before the shrink to WORK_SIDE; a burst of small
# files that decode large waits its turn instead of holding gigabytes (perf/serve_uploads.py).
DECODE_PIXELS = MAX_PIXELS
FILTER_VALUES_MAX = 200  # a metadata column with more distinct values is no menu (ids, paths)
_NOT_FILTERS = ("row", "id", "path")


class NotFound(UserError):
    """An item id the index does not hold (HTTP 404)."""


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 HxWx3 or HxW as PNG; zlib level 1: several times faster than 6, barely larger."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(image: np.ndarray | None) -> str | None:
    """A picture as a PNG data URL, shrunk to PREVIEW_SIDE on its long side; None stays None."""
    if image is None:
        return None
    data = png_bytes(shrink(image, PREVIEW_SIDE))
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """The picture with its long side cut to `side` (bicubic, as `images.fit_square` resizes)."""
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def image_url(item_id: Any) -> str:
    return f"/api/items/{quote(str(item_id), safe='')}/image"


class Service:
    """The loaded index and methods, the batcher that runs them, and the API's answers.

    `retrievers`: {method name: `Retriever`} in the order offered, each with its models loaded;
    `default`: the method a request that names none gets (None: the first)."""

    def __init__(self, retrievers: Mapping[str, Any], default: str | None = None,
                 device: str = "cpu", compiled: bool = False, wait_s: float = 0.005,
                 max_batch: int = 16, workers: int = 1):
        self.retrievers = dict(retrievers)
        self.default = default_method(list(self.retrievers), default)
        self.device, self.compiled = device, compiled
        # what each method edits, from its models' config files (a model of attributes the
        # index lacks is refused here, before anything is served)
        self.editable = {name: r.method.editable(r.schema) for name, r in self.retrievers.items()}
        self.batcher = MicroBatcher(lambda jobs: run_jobs(self.retrievers, jobs), wait_s,
                                    max_batch, workers)
        self.filters = metadata_filters(self.retriever.searcher)
        self._catalog_lock = threading.Lock()  # one SQLite connection for the catalog DB
        self.decoding = PixelBudget(DECODE_PIXELS)  # uploads' pixels decoded at once

    @property
    def retriever(self):
        """The default method's retriever: the index, its schema and the catalog's images."""
        return self.retrievers[self.default]

    @property
    def searcher(self):
        return self.retriever.searcher

    def close(self) -> None:
        self.batcher.close()

    def retriever_of(self, name: str | None):
        """The retriever of the method `name` (None or blank: the default); a one-line UserError
        naming the methods offered for any other."""
        name = name.strip() if name and name.strip() else self.default
        if name not in self.retrievers:
            raise UserError(f"unknown method {name!r}; valid: {', '.join(self.retrievers)}")
        return self.retrievers[name]

    # -- descriptions ------------------------------------------------------------------------------

    def health(self) -> dict:
        return {"status": "ok", "items": self.searcher.count, "methods": list(self.retrievers),
                "default_method": self.default, "compiled": self.compiled, "device": self.device}

    def schema(self) -> dict:
        return {"attributes": self.retriever.schema.to_dict(), "methods": self.methods(),
                "default_method": self.default, "filters": self.filters, "k_max": K_MAX}

    def methods(self) -> list[dict]:
        """Each method offered: its name and kind, whether it makes a picture (an edit and its
        mask), the attributes it edits and the regions it can confine an edit to."""
        return [{"name": name, "kind": r.method.kind, "edits_pixels": r.method.edits_pixels,
                 "attributes": self.editable[name], "regions": self.regions(r)}
                for name, r in self.retrievers.items()]

    @staticmethod
    def regions(retriever) -> list[str]:
        """The named regions (`editors.REGION_ALIASES`) the method's editor can make: none for a
        method that edits no pixels."""
        from amgan_search.editors import REGION_ALIASES

        if not retriever.method.edits_pixels:
            return []
        out = []
        for name in REGION_ALIASES:
            try:
                retriever.manipulator.parse_region(name)
                out.append(name)
            except UserError:
                pass
        return out

    def items(self, offset: int = 0, limit: int = 24) -> dict:
        """A page of items (the app declares the bounds: offset >= 0, limit 1..ITEMS_LIMIT_MAX)."""
        from amgan_search.index.index_dir import plain

        rows = self.searcher.items.iloc[offset:offset + limit]
        names = self.retriever.schema.names
        return {"total": self.searcher.count,
                "items": [{"id": plain(r["id"]), "attributes": {a: plain(r[a]) for a in names},
                           "image_url": image_url(plain(r["id"]))} for _, r in rows.iterrows()]}

    # -- item images, by id only --------------------------------------------------------------------

    def item_image(self, item_id: str) -> np.ndarray:
        """The catalog image of an item of the index, found through its metadata row."""
        row = self.searcher.row_of(item_id)
        if row < 0:
            raise NotFound(f"unknown item id {item_id!r}")
        path = self.searcher.items.iloc[row].get("path")
        with self._catalog_lock:
            image = self.retriever.read_result_image(path) if path else None
        if image is None:
            raise NotFound(f"item {item_id!r}: its catalog image cannot be read")
        return image

    def item_png(self, item_id: str) -> bytes:
        return png_bytes(self.item_image(item_id))

    # -- checks -------------------------------------------------------------------------------------

    def job(self, image: np.ndarray, targets: Mapping[str, str], only_region: str | None = None,
            k: int = 10, where: Mapping[str, str] | None = None, search: bool = True,
            method: str | None = None) -> Job:
        """A checked job, or a one-line UserError naming the valid choices (k's bounds, 1..K_MAX,
        are the app's to declare)."""
        retriever = self.retriever_of(method)
        name = retriever.method.name
        targets = retriever.validate(targets)
        lacking = [a for a in targets if a not in self.editable[name]]
        if lacking:
            raise UserError(f"the method {name!r} cannot edit {', '.join(lacking)}; it edits "
                            + ", ".join(self.editable[name]))
        pixels = retriever.method.edits_pixels
        if not search and not pixels:
            raise UserError(f"the method {name!r} edits no pixels: it has no picture to show")
        if targets and pixels:
            retriever.manipulator.check_targets(targets)
        elif not search:
            raise UserError("no target attribute given; valid: " + ", ".join(self.editable[name]))
        if only_region:
            if not targets:
                raise UserError("only_region needs a target attribute to edit")
            if not pixels:
                raise UserError(f"only_region: the method {name!r} edits no pixels, so it has no "
                                "region to confine the edit to")
            retriever.manipulator.parse_region(only_region)
        return Job(shrink(image, WORK_SIDE), targets, only_region or None, k,
                   self.check_where(where), search, method=name)

    def check_where(self, where: Mapping[str, str] | None) -> dict[str, str] | None:
        """Metadata filters: known fields, and values from the field's menu where it has one."""
        if not where:
            return None
        schema = self.retriever.schema.to_dict()
        menus = {**self.filters, **schema}
        fields = [c for c in self.searcher.filter_fields() if c not in _NOT_FILTERS]
        out = {}
        for key, value in where.items():
            if key not in fields:
                raise UserError(f"where: unknown field {key!r}; valid: {', '.join(menus)}")
            if key in menus and str(value) not in menus[key]:
                raise UserError(f"where: unknown {key} value {value!r}; valid: "
                                + ", ".join(menus[key]))
            out[key] = str(value)
        return out

    # -- answers ------------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run what a busy server runs before the first client: for each method, a query alone,
        two together and full batches, on as many threads at once as there are workers, with a
        photo-sized picture. First-call allocations, every thread's allocator arenas and the
        buffers of the largest batches are made now (and a compiled model's dynamic shapes), so
        the memory the server holds from here on is its working set."""
        image = np.random.default_rng(0).integers(0, 256, (512, 384, 3), dtype=np.uint8)
        schema = self.retriever.schema
        jobs = []
        for name, editable in self.editable.items():
            first = schema.attribute(editable[0]) if editable else None
            jobs.append(Job(image, {first.name: first.values[0]} if first else {}, None, 10,
                            None, True, method=name))

        def busy():
            for job in jobs:
                for size in sorted({1, 2, self.batcher.max_batch}):
                    run_jobs(self.retrievers, [job] * size)

        threads = [threading.Thread(target=busy) for _ in range(self.batcher.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def query_body(self, job: Job, start_id: Any, outcome: Outcome, started: float) -> dict:
        """The answer to POST /api/query. timing_ms: edit, embed and search are the stages of the
        batch the query ran in (its queries of the same method); total is the request's own time
        in the server until this answer (upload decoding, queueing and picture encoding
        included)."""
        # ids and URLs only: a result's path is where the server keeps the file
        results = [{**{k: v for k, v in r.as_dict().items() if k != "path"},
                    "image_url": image_url(r.id)} for r in outcome.results or []]
        timing = {k: round(v, 2) for k, v in outcome.timing_ms.items()}
        body = {"method": outcome.method, "targets": outcome.targets,
                "start": {"item_id": start_id}, "image": data_url(job.image),
                "edited": data_url(outcome.edited), "mask": data_url(outcome.mask),
                "results": results, "timing_ms": timing}
        timing["total"] = round((time.perf_counter() - started) * 1e3, 2)
        return body

    @staticmethod
    def edit_body(outcome: Outcome) -> dict:
        return {"method": outcome.method, "targets": outcome.targets,
                "edited": data_url(outcome.edited), "mask": data_url(outcome.mask)}


def default_method(names: list[str], default: str | None) -> str:
    """The method a request that names none gets: `default` (one of `names`), else the first."""
    if not names:
        raise UserError("no method to answer queries with")
    if default is None:
        return names[0]
    if default not in names:
        raise UserError(f"the default method {default!r} is not one of those offered: "
                        + ", ".join(names))
    return default


def metadata_filters(searcher) -> dict[str, list[str]]:
    """{column: sorted distinct values} of the metadata columns that are not attributes, ids or
    paths and hold between 1 and FILTER_VALUES_MAX values."""
    items, names = searcher.items, set(searcher.schema.names)
    out = {}
    for col in items.columns:
        if col in _NOT_FILTERS or col in names:
            continue
        values = sorted({str(v) for v in items[col].dropna().unique()})
        if 1 <= len(values) <= FILTER_VALUES_MAX:
            out[col] = values
    return out
