"""A client of `amgan-search serve` for `query --server URL`: the shell user's warm path.

Standard library HTTP only, and nothing that imports torch: the command's cost is the request,
not the models (the server holds them). The answer has the shape of a local query's, so the
CLI prints the same table and JSON.
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

TIMEOUT_S = 120.0  # a server that compiles at start answers after its warm-up; queries take ms


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
                return resp.read()
        except error.HTTPError as exc:
            raise UserError(f"{self.url}: {exc.code} {_error_text(exc)}") from None
        except (error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{self.url}: cannot reach the server ({reason})") from None

    def get_json(self, path: str) -> dict:
        return _json(self._open(path), self.url)

    def get_bytes(self, path: str) -> bytes:
        return self._open(path)

    def post_form(self, path: str, fields: Mapping[str, str],
                  files: Mapping[str, tuple[str, bytes]] = ()) -> dict:
        body, content_type = multipart(fields, files)
        return _json(self._open(path, body, content_type), self.url)

    def query(self, image: str | Path, targets: Mapping[str, str], k: int = 10,
              where: Mapping[str, str] | None = None, only_region: str | None = None) -> dict:
        """POST /api/query with an image file: the server's JSON answer."""
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        fields = {"targets": json.dumps(dict(targets)), "k": str(k)}
        if where:
            fields["where"] = json.dumps(dict(where))
        if only_region:
            fields["only_region"] = only_region
        return self.post_form("/api/query", fields, {"image": (path.name, path.read_bytes())})

    def item_image(self, item_id) -> np.ndarray | None:
        """A catalog item's image by id, None when the server has none."""
        try:
            return decode_png(self.get_bytes(f"/api/items/{quote(str(item_id), safe='')}/image"))
        except UserError:
            return None


def _json(data: bytes, url: str) -> dict:
    try:
        return json.loads(data)
    except ValueError:
        raise UserError(f"{url}: the answer is not JSON; is this an amgan-search server?") from None


def _error_text(exc: error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error") or exc.reason)
    except (ValueError, AttributeError, OSError):
        return str(exc.reason)


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img)


def from_data_url(url: str | None) -> np.ndarray | None:
    """A `data:image/png;base64,...` picture of the server's answer as an array."""
    if not url:
        return None
    return decode_png(base64.b64decode(url.split(",", 1)[1]))


def local_shape(answer: Mapping) -> list[dict]:
    """The answer's results as a local query lists them (without the server's image URLs)."""
    return [{k: v for k, v in r.items() if k != "image_url"} for r in answer.get("results", [])]


def save_answer(client: Client, answer: Mapping, image: np.ndarray, out: str | Path,
                inputs: Sequence[str | Path] = ()) -> str | None:
    """edited.png, mask.png and contact.png into `out`, as `Retriever.save` writes them (the
    server's pictures are previews, at most its preview side); the edited image's path or None."""
    from amgan_search.images import save_image
    from amgan_search.index.sheet import contact_sheet
    from amgan_search.outputs import claim_file

    out = Path(out)
    given = {Path(p).resolve() for p in inputs}
    for name in ("edited.png", "mask.png", "contact.png"):  # replaced only when PNGs, as locally
        if (out / name).resolve() in given:
            raise UserError(f"{out / name}: is one of the inputs; choose another output folder")
        claim_file(out / name, _is_png, "PNG image")
    out.mkdir(parents=True, exist_ok=True)
    edited, mask = from_data_url(answer.get("edited")), from_data_url(answer.get("mask"))
    edited_path = None
    if edited is not None:
        edited_path = str((out / "edited.png").resolve())
        save_image(edited_path, edited)
    if mask is not None:
        save_image(out / "mask.png", mask)
    thumbs = [(client.item_image(r["id"]), f"#{r['rank']} {r['id']} {r['score']:.3f}\n"
               + " ".join(str(v) for v in r["attributes"].values()))
              for r in answer.get("results", [])]
    sheet = contact_sheet(image, edited, mask, thumbs, answer.get("targets", {}))
    save_image(out / "contact.png", sheet)
    return edited_path


def _is_png(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"
