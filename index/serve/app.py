"""`amgan-search serve`: one long-running process with the index and the models loaded once,
answering a JSON API and the web page (index/serve/web, at / and /static/):

  GET  /api/health                  status, item count, methods, default method, compiled, device
  GET  /api/schema                  attributes and values, the methods offered (what each edits,
                                    whether it makes a picture, its regions) and the default,
                                    metadata filters, k_max
  GET  /api/items?offset&limit      catalog items to start from
  GET  /api/items/{id}/image        an item's catalog image (PNG), by id only
  POST /api/query                   image or item_id, method, targets, only_region, k, where ->
                                    the method that answered, the edit, its mask (none for a
                                    method that moves vectors) and the top-k results
  POST /api/edit                    image or item_id, method, targets, only_region -> the edit
                                    and mask
  GET  /docs                        the OpenAPI page

Each request names its method (`index.methods`: a GAN edits the pixels, `adde` moves the query's
embedding, the hybrid does both) among those the server offers (`serve --methods`), or gets the
server's default; every method's models are loaded, compiled and warmed up at start, and a batch
runs each of its queries through its own method (`batch_query`).

Stack: FastAPI on uvicorn. Both are widely used and well kept; FastAPI declares each endpoint's
parameters once and derives the checks and the OpenAPI page from them, and its async request
handling receives uploads and encodes answers while one worker thread (`batching.MicroBatcher`)
keeps the models busy with batches of the requests that arrived together (`batch_query`).

Safe by default: it listens on 127.0.0.1; request bodies over the upload limit are refused with
413 before they are parsed; uploads go through the project's image loader (pixel limit, one-line
errors), decoded off the event loop within a budget of pixels in flight (`Service.decoding`), so
a burst of small files that decode large neither exhausts memory nor stalls /api/health; JSON
fields are parsed within a size and a nesting depth; item images are served by item id only, and
no answer carries a path of the server's (results name ids and URLs; an error's absolute paths
are cut to their last name); every error is a 4xx (503 when the index's catalog changed under it,
500 for a fault of the server itself) with the body {"error": "one line"}, never a trace, and the
process keeps serving.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from amgan_search import __version__
from amgan_search.errors import UserError
from amgan_search.images import decode_image
from amgan_search.index.index_dir import StaleIndex
from amgan_search.index.serve.answers import (EditAnswer, ErrorAnswer, Health, Items, QueryAnswer,
                                              SchemaAnswer)
from amgan_search.index.serve.service import (ITEMS_LIMIT_MAX, K_MAX, MAX_UPLOAD_BYTES, WORK_SIDE,
                                              NotFound, Service, default_method)
from amgan_search.io import parse_json

WEB_DIR = Path(__file__).resolve().parent / "web"
# Room for the multipart framing and the text fields around a 10 MiB image.
BODY_LIMIT = MAX_UPLOAD_BYTES + 256 * 1024
# An oversized body up to this size is read and dropped before the 413, so the client, still
# sending, gets the answer instead of a reset connection; past it the connection is closed.
DRAIN_LIMIT = 8 * BODY_LIMIT
TOO_LARGE = f"upload over the {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB limit"
# A JSON form field (targets, where) is a small flat object: past these it is no request of ours.
FIELD_BYTES, FIELD_DEPTH = 64 * 1024, 8
# Every error answers {"error": "one line"}: what the OpenAPI page shows for each route.
ERRORS = {code: {"model": ErrorAnswer, "description": text} for code, text in (
    (400, "a bad request, named on one line"), (404, "an item id the index does not hold"),
    (413, "an upload over the limit"), (500, "a fault of the server itself"),
    (503, "the index's catalog changed under the server"))}
# An absolute path inside a message: what a client is never told (its last name is kept).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"]+/)*([^\s/'\"]+)")


def one_line(text: Any) -> str:
    return " ".join(str(text).split()) or "error"


def public(text: Any) -> str:
    """A message as a client may read it: one line, each absolute path cut to its last name."""
    return _ABSOLUTE_PATH.sub(r"\1", one_line(text))


def error(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"error": public(message)}, status_code=status)


class BodyLimit:
    """ASGI middleware: 413 for request bodies over `limit`, by Content-Length or as they stream."""

    def __init__(self, app, limit: int = BODY_LIMIT):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_LIMIT:
                await _drain(receive)
            return await error(413, TOO_LARGE)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                if message.get("more_body"):
                    await _drain(receive)
                raise HTTPException(413, TOO_LARGE)  # FastAPI re-raises it from the body parser
            return message

        return await self.app(scope, counted, send)


async def _drain(receive) -> None:
    seen = 0
    while seen <= DRAIN_LIMIT:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            return


def parse_object(text: str | None, name: str) -> dict[str, str]:
    """A form field holding a JSON object of strings ({} when absent or blank)."""
    if text is None or not text.strip():
        return {}
    value = parse_json(text, name, FIELD_BYTES, FIELD_DEPTH)
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) and not
                                              isinstance(v, bool) for v in value.values()):
        raise UserError(f"{name}: expected a JSON object of strings, e.g. {{\"color\": \"red\"}}")
    return {str(k): str(v) for k, v in value.items()}


async def start_picture(service: Service, image: UploadFile | None, item_id: str | None):
    """(uint8 photo, item id or None) of a request: an upload or a catalog item, never both."""
    data = await image.read(MAX_UPLOAD_BYTES + 1) if image is not None else b""
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, TOO_LARGE)
    item_id = item_id.strip() if item_id else None
    if image is not None and (data or not item_id):
        if item_id:
            raise UserError("give an image or an item_id, not both")
        # In a worker thread, shrunk to the pipeline's side as it is decoded, within the pixel
        # budget: the event loop (and /api/health) never waits on a decoding.
        return await run_in_threadpool(decode_image, data, "image", WORK_SIDE,
                                       service.decoding), None
    if not item_id:
        raise UserError("give an image (file) or an item_id to start from")
    return await run_in_threadpool(service.item_image, item_id), item_id


TARGETS = 'a JSON object of target values by attribute, e.g. {"color": "red"}'
REGION = "confine the edit to a named region (e.g. sleeves) or that of ATTR=VALUE"
WHERE = 'a JSON object of metadata values results must have, e.g. {"split": "test"}'
METHOD = "the method that answers, one of those GET /api/schema lists [default: the server's]"
METHOD_CHARS = 200  # a method's name: a word or a folder's name


def create_app(service: Service, web_dir: Path = WEB_DIR) -> FastAPI:
    """The FastAPI app over a loaded Service."""
    app = FastAPI(title="amgan-search", version=__version__,
                  description="Edit a garment photo toward wanted attributes and search the catalog.")
    _error_handlers(app)
    app.add_middleware(BodyLimit)
    if web_dir.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=web_dir), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        index = web_dir / "index.html"
        if not index.is_file():
            raise NotFound(f"no web page here ({index} is missing); the API is under /api, see /docs")
        return FileResponse(index, media_type="text/html")

    @app.get("/api/health", response_model=Health, responses=ERRORS)
    async def health() -> dict:  # on the event loop: answers while worker threads decode
        return service.health()

    @app.get("/api/schema", response_model=SchemaAnswer, responses=ERRORS)
    def schema() -> dict:
        return service.schema()

    @app.get("/api/items", response_model=Items, responses=ERRORS)
    def items(offset: int = Query(0, ge=0, description="the first item, counted from 0"),
              limit: int = Query(24, ge=1, le=ITEMS_LIMIT_MAX, description="items on the page")
              ) -> dict:
        return service.items(offset, limit)

    @app.get("/api/items/{item_id:path}/image", response_class=Response, responses={
        **ERRORS, 200: {"content": {"image/png": {}}, "description": "the item's image"}})
    def item_image(item_id: str):
        return Response(service.item_png(item_id), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/query", response_model=QueryAnswer, responses=ERRORS)
    async def query(image: UploadFile | None = File(None, description="the photo (or item_id)"),
                    item_id: str | None = Form(None, description="a catalog item to start from"),
                    method: str | None = Form(None, max_length=METHOD_CHARS, description=METHOD),
                    targets: str = Form("{}", description=TARGETS),
                    only_region: str | None = Form(None, description=REGION),
                    k: int = Form(10, ge=1, le=K_MAX, description="results to return"),
                    where: str | None = Form(None, description=WHERE)) -> dict:
        started = time.perf_counter()
        with service.batcher.arriving():
            service.retriever_of(method)  # an unknown method fails before the upload is decoded
            picture, start_id = await start_picture(service, image, item_id)
            job = service.job(picture, parse_object(targets, "targets"), only_region, k,
                              parse_object(where, "where"), method=method)
            future = service.batcher.submit(job)
        outcome = await asyncio.wrap_future(future)
        return await run_in_threadpool(service.query_body, job, start_id, outcome, started)

    @app.post("/api/edit", response_model=EditAnswer, responses=ERRORS)
    async def edit(image: UploadFile | None = File(None, description="the photo (or item_id)"),
                   item_id: str | None = Form(None, description="a catalog item to start from"),
                   method: str | None = Form(None, max_length=METHOD_CHARS, description=METHOD),
                   targets: str = Form("{}", description=TARGETS),
                   only_region: str | None = Form(None, description=REGION)) -> dict:
        with service.batcher.arriving():
            service.retriever_of(method)
            picture, _ = await start_picture(service, image, item_id)
            job = service.job(picture, parse_object(targets, "targets"), only_region, search=False,
                              method=method)
            future = service.batcher.submit(job)
        outcome = await asyncio.wrap_future(future)
        return await run_in_threadpool(service.edit_body, outcome)

    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error as {"error": "one line"}: the client's 4xx, the server's own faults 500."""

    @app.exception_handler(UserError)
    async def user_error(request, exc: UserError):
        if isinstance(exc, StaleIndex):  # the server's files, not the request: logged in full
            print(f"error: {exc}", file=sys.stderr)
            return error(503, exc)
        return error(404 if isinstance(exc, NotFound) else 400, exc)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
        return error(400, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def fault(request, exc: Exception):  # the trace goes to the server's log, not the client
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")


# ---------------------------------------------------------------- starting the server

def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the port is known before uvicorn starts and
    connections made meanwhile wait in its backlog instead of being refused."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise UserError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


def load_service(index_dir, model=None, threads: int | None = None, compile: bool = True,
                 wait_ms: float = 5.0, max_batch: int = 16, precision: str = "auto",
                 workers: int | None = None, log: Callable[[str], None] = print,
                 methods=None, default: str | None = None) -> Service:
    """Load the index and every method's models once, compile them if asked, warm them up.

    `methods`: a --methods spec or a list of them (`index.methods.parse_methods`; None: the GAN
    folder `model` alone, else `methods.DEFAULT`); `default`: the method a request that names none
    gets (None: the first). The methods share the index, its embedder and, where two use the same
    GAN, its editor; a method with its own encoder gets its index built beside the base index on
    first use (`spaces.space_index`), here at start, not during a request.
    Threads: `device.set_torch_threads` (--threads, else OMP_NUM_THREADS, else the policy's
    count for a server); batch workers (`batching`): one per core those threads leave, at most 4.
    Precision: bf16 where the CPU has it natively, else fp32 (`Retriever`)."""
    from amgan_search.device import available_cores, compile_paths, pick_device, set_torch_threads

    offered = _offered(methods, model)
    default = default_method([m.name for m in offered], default)  # before minutes of loading
    n = set_torch_threads(threads, role="serve")
    workers = workers or max(1, min(4, available_cores() // n))
    start = time.perf_counter()
    log(f"loading {index_dir} and the models of {', '.join(m.name for m in offered)} ({n} torch "
        f"thread{'s' if n != 1 else ''} in each of {workers} batch worker"
        f"{'s' if workers != 1 else ''}) ...")
    retrievers = _retrievers(index_dir, offered, precision)
    first = next(iter(retrievers.values()))
    log(f"loaded {first.searcher.count} items in {time.perf_counter() - start:.1f} s "
        f"({first.precision})")
    compiled = False
    if compile:
        log("compiling the models once (torch.compile; this can take a minute) ...")
        start = time.perf_counter()
        # Batch sizes 1 and 2: the second compilation is for any batch size the batcher makes.
        compiled = compile_paths(_compile_steps(retrievers, (1, 2)), progress=log)
        log(f"compiled in {time.perf_counter() - start:.0f} s" if compiled else "running uncompiled")
    service = Service(retrievers, default=default, device=pick_device(first.device),
                      compiled=compiled, wait_s=wait_ms / 1000, max_batch=max_batch,
                      workers=workers)
    service.warm_up()
    return service


def _offered(methods, model) -> list:
    """The methods a server offers: `methods` (a spec or a list), or the GAN folder `model`
    alone, or the default method."""
    from amgan_search.index.methods import Method, parse_methods, resolve_method

    if methods is not None and model is not None:
        raise UserError("a GAN folder (model) and a list of methods both name what answers; "
                        "give one")
    if methods is None:
        return [resolve_method(None, model)]
    if isinstance(methods, str) or not all(isinstance(m, Method) for m in methods):
        return parse_methods(methods)
    return list(methods)


def _retrievers(index_dir, methods, precision: str) -> dict:
    """{name: Retriever} with every model loaded now, on one searcher and embedder; a GAN two
    methods use (amgan and the hybrid) is loaded once."""
    from amgan_search.index.retrieve import Retriever
    from amgan_search.index.search import Searcher

    searcher = Searcher(index_dir)
    embedder = searcher.embedder()
    editors: dict[str, object] = {}
    out = {}
    for method in methods:
        gan = str(method.editor_dir()) if method.kind in ("editor", "hybrid") else None
        r = Retriever(index_dir, searcher=searcher, embedder=embedder, precision=precision,
                      method=method, manipulator=editors.get(gan), progress=True)
        r.space  # the method's space now: an index of its own encoder is built here, once
        if gan is not None:
            editors[gan] = r.manipulator
        out[method.name] = r
    return out


def _compile_steps(retrievers: dict, batch_sizes) -> list:
    """Every network the methods run, once each (methods share the embedder and a GAN), named
    with the first method that runs it."""
    steps, seen = [], set()
    for name, r in retrievers.items():
        for label, path, calls in r.compile_steps(batch_sizes):
            if id(path) not in seen:
                seen.add(id(path))
                steps.append((f"{label} ({name})", path, calls))
    return steps


def serve(index_dir, model=None, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None, compile: bool = True, wait_ms: float = 5.0,
          max_batch: int = 16, workers: int | None = None,
          log: Callable[[str], None] = print, methods=None, default: str | None = None) -> None:
    """Run the server until interrupted."""
    import uvicorn

    sock = listen_socket(host, port)  # before the slow loading: a taken port fails at once
    service = load_service(index_dir, model, threads, compile, wait_ms, max_batch,
                           workers=workers, log=log, methods=methods, default=default)
    try:
        app = create_app(service)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            log(f"warning: listening on {host}: anyone who can reach it can query the catalog")
        log(f"serving on http://{shown}:{bound[1]}/ (API docs: /docs); Ctrl-C stops")
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        service.close()
        sock.close()
