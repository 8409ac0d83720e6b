"""A client of `amgan-search serve` for `query --server URL`: the shell user's warm path.

Standard library HTTP only, and nothing that imports torch: the command's cost is the request,
not the models (the server holds them). The answer has the shape of a local query's, so the
CLI prints the same table and JSON; a result's path is its image's URL on the server, which sends
no file paths.

Every answer is checked before it is used: read within a size and a JSON nesting depth, then its
shape (`check_answer`, `check_attributes`), so a server that is not amgan-search, or a broken
answer, is one line naming the server and what is wrong, never a traceback.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Mapping, Sequence
from urllib import error, request
from urllib.parse import quote, urljoin

import numpy as np

from amgan_search.errors import UserError
from amgan_search.io import parse_json

TIMEOUT_S = 120.0  # a server that compiles at start answers after its warm-up; queries take ms
# An answer holds three preview pictures (512 px PNGs, base64) and up to 100 results: a few MB.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
DATA_URL = "data:image/png;base64,"


def multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes]] = ()
              ) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request: text fields and (filename, bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     .encode() + str(value).encode() + b"\r\n")
    for name, (filename, data) in dict(files).items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{safe}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                     + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Client:
    """Requests to one server; its errors as one-line UserErrors naming the server."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S):
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url, self.timeout = url.rstrip("/") + "/", timeout

    def _open(self, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        req = request.Request(urljoin(self.url, path.lstrip("/")), data=body,
                              headers={"Content-Type": content_type} if content_type else {})
        try:
            with request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read(MAX_ANSWER_BYTES + 1)
        except error.HTTPError as exc:
            raise UserError(f"{self.url}: {exc.code} {_error_text(exc)}") from None
        except (error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{self.url}: cannot reach the server ({reason})") from None
        if len(data) > MAX_ANSWER_BYTES:
            raise UserError(f"{self.url}: the answer is over {MAX_ANSWER_BYTES // 2**20} MiB; "
                            "is this an amgan-search server?")
        return data

    def get_json(self, path: str):
        return _json(self._open(path), self.url)

    def attributes(self) -> dict[str, list[str]]:
        """The server's attributes and their values (GET /api/schema), checked."""
        return check_attributes(self.get_json("/api/schema"), self.url)

    def get_bytes(self, path: str) -> bytes:
        return self._open(path)

    def post_form(self, path: str, fields: Mapping[str, str],
                  files: Mapping[str, tuple[str, bytes]] = ()) -> dict:
        body, content_type = multipart(fields, files)
        return _json(self._open(path, body, content_type), self.url)

    def query(self, image: str | Path, targets: Mapping[str, str], k: int = 10,
              where: Mapping[str, str] | None = None, only_region: str | None = None,
              method: str | None = None) -> dict:
        """POST /api/query with an image file: the server's JSON answer (`method`: one the
        server offers, by name; None: its default)."""
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        fields = {"targets": json.dumps(dict(targets)), "k": str(k)}
        if method:
            fields["method"] = method
        if where:
            fields["where"] = json.dumps(dict(where))
        if only_region:
            fields["only_region"] = only_region
        answer = check_answer(self.post_form("/api/query", fields,
                                             {"image": (path.name, path.read_bytes())}), self.url)
        for r in answer["results"]:  # the server's URL of each result's image, in full
            r["image_url"] = urljoin(self.url, r["image_url"].lstrip("/"))
        return answer

    def item_image(self, item_id) -> np.ndarray | None:
        """A catalog item's image by id, None when the server has none (or sends no picture)."""
        try:
            return decode_png(self.get_bytes(f"/api/items/{quote(str(item_id), safe='')}/image"))
        except UserError:
            return None


def _json(data: bytes, url: str):
    try:
        return parse_json(data, url, MAX_ANSWER_BYTES)
    except UserError as exc:
        raise UserError(f"{exc}; is this an amgan-search server?") from None


def _not_ours(url: str, what: str) -> UserError:
    return UserError(f"{url}: not an amgan-search answer ({what})")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_answer(answer, url: str) -> dict:
    """A /api/query answer of the shape amgan-search sends, or a one-line UserError naming the
    first thing that is not: targets, pictures as PNG data URLs, results with rank, id, score,
    attributes and the URL of their image, the method that answered."""
    if not isinstance(answer, dict):
        raise _not_ours(url, f"a JSON {type(answer).__name__}, not an object")
    targets = answer.get("targets", {})
    if not isinstance(targets, dict) or not all(isinstance(v, str) for v in targets.values()):
        raise _not_ours(url, "targets is not an object of strings")
    for key in ("edited", "mask"):
        value = answer.get(key)
        if value is not None and not (isinstance(value, str) and value.startswith(DATA_URL)):
            raise _not_ours(url, f"{key} is not a PNG data URL")
    results = answer.get("results")
    if not isinstance(results, list):
        raise _not_ours(url, "no results list")
    for n, r in enumerate(results, start=1):
        if not (isinstance(r, dict) and isinstance(r.get("rank"), int)
                and isinstance(r.get("id"), (str, int)) and _is_number(r.get("score"))
                and isinstance(r.get("attributes"), dict)
                and isinstance(r.get("image_url"), str) and r["image_url"].startswith("/api/")):
            raise _not_ours(url, f"result {n} lacks a rank, id, score, attributes or image_url")
    if not isinstance(answer.get("method"), str) or not answer["method"]:
        raise _not_ours(url, "no method named")
    return answer


def check_attributes(schema, url: str) -> dict[str, list[str]]:
    """The "attributes" of a /api/schema answer: {name: [value, ...]}, or a one-line UserError."""
    attributes = schema.get("attributes") if isinstance(schema, dict) else None
    if not (isinstance(attributes, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in attributes.values())):
        raise _not_ours(url, "no attributes mapping names to lists of values")
    return attributes


def _error_text(exc: error.HTTPError) -> str:
    try:
        return str(parse_json(exc.read(64 * 1024), "error", 64 * 1024).get("error") or exc.reason)
    except (UserError, AttributeError, OSError):
        return str(exc.reason)


def decode_png(data: bytes, name: str = "the server's picture") -> np.ndarray:
    """A picture the server sent (RGB, or L for a mask) within the loader's pixel limit; a
    one-line UserError naming `name` when it is none."""
    from PIL import Image, UnidentifiedImageError

    from amgan_search.images import MAX_PIXELS

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UserError(f"{name}: {img.width}x{img.height} pixels is over the "
                                f"{MAX_PIXELS:,}-pixel limit")
            return np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img)
    except UnidentifiedImageError:
        raise UserError(f"{name}: not a picture") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{name}: unreadable picture ({exc})") from None


def from_data_url(url: str | None, name: str = "the server's picture") -> np.ndarray | None:
    """A `data:image/png;base64,...` picture of the server's answer as an array."""
    if not url:
        return None
    try:
        data = base64.b64decode(url[len(DATA_URL):], validate=True)
    except ValueError:
        raise UserError(f"{name}: not base64") from None
    return decode_png(data, name)


def local_shape(answer: Mapping) -> list[dict]:
    """The answer's results as a local query lists them, each result's path the URL of its
    image on the server (a server sends no file paths)."""
    return [{**{k: v for k, v in r.items() if k != "image_url"}, "path": r["image_url"]}
            for r in answer.get("results", [])]


def save_answer(client: Client, answer: Mapping, image: np.ndarray, out: str | Path,
                inputs: Sequence[str | Path] = ()) -> str | None:
    """edited.png, mask.png and contact.png into `out`, as `Retriever.save` writes them (the
    server's pictures are previews, at most its preview side); the edited image's path or None."""
    from amgan_search.outputs import claim_pngs
    from amgan_search.images import save_image
    from amgan_search.index.sheet import contact_sheet

    out = Path(out)
    # Replaced only when PNGs a query wrote, as locally.
    claim_pngs([out / name for name in ("edited.png", "mask.png", "contact.png")], "query", inputs)
    out.mkdir(parents=True, exist_ok=True)
    edited = from_data_url(answer.get("edited"), f"{client.url}: the edited picture")
    mask = from_data_url(answer.get("mask"), f"{client.url}: the mask")
    edited_path = None
    if edited is not None:
        edited_path = str((out / "edited.png").resolve())
        save_image(edited_path, edited, made_by="query")
    if mask is not None:
        save_image(out / "mask.png", mask, made_by="query")
    thumbs = [(client.item_image(r["id"]), f"#{r['rank']} {r['id']} {r['score']:.3f}\n"
               + " ".join(str(v) for v in r["attributes"].values()))
              for r in answer.get("results", [])]
    sheet = contact_sheet(image, edited, mask, thumbs, answer.get("targets", {}))
    save_image(out / "contact.png", sheet, made_by="query")
    return edited_path
