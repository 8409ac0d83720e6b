"""Load test of `amgan-search serve` on 127.0.0.1: 1, 4 and 8 concurrent clients x 50 queries.

Starts the server as its own process on a free port of 127.0.0.1 over an index (`--index`, or a
synthetic 10,000-item index of unit vectors with the shipped models: search cost depends on the
count and dimension, not on what the vectors mean), then for each client count every client sends
its queries one after another on one keep-alive connection (an upload of a rendered garment photo,
a target color, k=10). It reports p50/p95 latency, throughput, failed requests (must be 0), the
server's resident memory (at start, after an untimed warm-up round of 2 queries per client at
the highest concurrency, after each phase and at the end), the ratios (throughput at 8 clients
vs 1; p95 at 8 vs p50 at 1; memory at the end vs after the warm-up), and a phase where a client
sends bad requests (oversized, corrupt, unknown value) while 4 good clients keep querying: the
bad ones must get their 413/400, the good ones 200.

`--method M` (e.g. adde): the server offers AMGAN and M (`serve --methods amgan,M`), and each
client count is also run with every query naming M, right after AMGAN's; M's rows give its p50,
p95 and throughput against AMGAN's at the same count, in the same run. A method with its own
encoder (adde, the hybrid) searches the synthetic index's rows as embedded by it, written where
the server looks for them (`spaces.sibling_dir`), since a synthetic index has no catalog to embed.

Bounded: a fixed number of requests, each with a timeout, the whole run under --max-seconds; the
server is stopped at the end whatever happens. Only 127.0.0.1 is ever contacted.

    python perf/serve_load.py [--tiny] [--index DIR --model DIR] [--method M] [--queries 50]
        [--clients 1,4,8] [--threads N] [--workers N] [--max-batch N] [--no-compile] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 120.0


# ---------------------------------------------------------------- the index and the queries

def _models(root: Path, tiny: bool) -> tuple[str | None, object]:
    """(manipulator dir or None for the shipped one, embedder): untrained tiny ones with --tiny."""
    from amgan_search.index.embed import load_embedder

    if not tiny:
        return None, load_embedder(None, device="cpu")
    import torch

    from amgan_search.checkpoint import save_model_dir
    from amgan_search.nets.amgan import EditNet
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA

    torch.manual_seed(0)
    classifier = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32, role="cam")
    save_model_dir(root / "cam", classifier.config, classifier.state_dict())
    net = EditNet(DEFAULT_SCHEMA.condition_dim, conv_dim=8, repeat_num=1, attention="generator",
                  upsample="deconv")  # the config records none: what that means
    config = {"kind": "amgan", "method": "amgan", "schema": DEFAULT_SCHEMA.to_dict(), "size": 32,
              "c_dim": DEFAULT_SCHEMA.condition_dim, "conv_dim": 8, "repeat_num": 1,
              "attention": "generator", "classifier": {"path": str(root / "cam")}}
    save_model_dir(root / "gan", config, {f"net.{k}": v for k, v in net.state_dict().items()})
    return str(root / "gan"), load_embedder(root / "cam", device="cpu")


def synthetic_index(out: Path, embedder, n: int, seed: int = 0, schema=None) -> None:
    """n random unit vectors with random attributes of `schema` (None: the default synthetic
    one), recorded as built by `embedder`; the same items and labels for any embedder."""
    import pandas as pd

    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.index_dir import item_records
    from amgan_search.schema import DEFAULT_SCHEMA

    schema = schema or DEFAULT_SCHEMA
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, len(a.values), n) for a in schema.attributes], 1)
    items = pd.DataFrame({"id": [f"item{i}" for i in range(n)],
                          "path": [f"img/{i}.png" for i in range(n)], "split": "train",
                          "category": "top", "gender": rng.choice(["female", "male"], n)})
    v = rng.standard_normal((n, embedder.dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    build_from_vectors(out, v, labels, item_records(items, labels, schema), schema,
                       embedder.meta(), index_type="auto")


def synthetic_indexes(out: Path, embedder, n: int, method: str | None) -> None:
    """The synthetic index, and for a method with its own encoder its rows as that encoder's
    index beside it, both over the synthetic attributes the models name."""
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.methods import parse_method
    from amgan_search.index.spaces import sibling_dir
    from amgan_search.schema import DEFAULT_SCHEMA, SYNTHETIC_ATTRIBUTES, synthetic_schema

    chosen = parse_method(method) if method else None
    own = (load_embedder(chosen.encoder_dir(), device="cpu")
           if chosen and chosen.kind in ("feature", "hybrid") else None)
    names = set(DEFAULT_SCHEMA.names) | set(own.model.schema.names if own else ())
    schema = synthetic_schema([a for a in SYNTHETIC_ATTRIBUTES if a in names])
    synthetic_index(out, embedder, n, schema=schema)
    if own is not None:
        synthetic_index(sibling_dir(out, own.digest), own, n, schema=schema)


def photos(count: int = 8, size: int = 128) -> list[bytes]:
    """`count` rendered garment photos as PNG files."""
    from PIL import Image

    from amgan_search.synthetic import render, sample_scene

    out = []
    for i in range(count):
        image, _ = render(sample_scene(1000 + i), size)
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def query_bodies(schema: dict, pictures: list[bytes], method: str | None = None
                 ) -> list[tuple[bytes, str]]:
    """Multipart bodies: each photo with a target color (in turn), k=10; by `method` (None: the
    server's default)."""
    from amgan_search.index.serve.client import multipart

    name, values = next(iter(schema.items()))
    by = {"method": method} if method else {}
    return [multipart({**by, "targets": json.dumps({name: values[i % len(values)]}), "k": "10"},
                      {"image": (f"q{i}.png", data)}) for i, data in enumerate(pictures)]


def bad_bodies(schema: dict, picture: bytes) -> list[tuple[str, int, bytes, str]]:
    """(kind, expected status, body, content type) of the bad requests."""
    from amgan_search.index.serve.client import multipart
    from amgan_search.index.serve.service import MAX_UPLOAD_BYTES

    name = next(iter(schema))
    return [("oversized", 413, *multipart({"targets": "{}"},
                                          {"image": ("big.png", b"\0" * (MAX_UPLOAD_BYTES + 1))})),
            ("corrupt", 400, *multipart({"targets": "{}"}, {"image": ("bad.png", b"no image")})),
            ("unknown value", 400, *multipart({"targets": json.dumps({name: "no-such-value"})},
                                              {"image": ("q.png", picture)}))]


# ---------------------------------------------------------------- the server process

class ServerProcess:
    """`amgan-search serve --port 0` in its own process; its port read from the start-up line."""

    def __init__(self, index: Path, model: str | None, threads: int | None, compile: bool,
                 start_timeout: float, extra: tuple[str, ...] = ()):
        cmd = [sys.executable, "-m", "amgan_search.cli.main", "serve", "--index", str(index),
               "--host", HOST, "--port", "0"]
        cmd += ["--model", model] if model else []
        cmd += ["--threads", str(threads)] if threads else []
        cmd += [] if compile else ["--no-compile"]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.port = self._wait_for_port(start_timeout)
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_port(self, timeout: float) -> int:
        box: dict = {}

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
                if m:
                    box["port"] = int(m.group(1))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if "port" not in box:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines[-20:]))
        return box["port"]

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())

    def rss_mb(self) -> float | None:
        """Resident memory of the server process (Linux /proc), MB."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(m.group(1)) / 1024 if m else None

    def stop(self) -> None:
        """Ctrl-C (uvicorn finishes what it has), then terminate, then kill."""
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                return
            self.proc.send_signal(sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue


# ---------------------------------------------------------------- clients

def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            ctype: str | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
    resp = conn.getresponse()
    return resp.status, resp.read()


def client_loop(port: int, jobs: list[tuple[bytes, str, int]], deadline: float, out: list) -> None:
    """Send jobs (body, content type, expected status) one after another; append
    (seconds, ok) per request; stop at the deadline."""
    conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
    try:
        for body, ctype, expected in jobs:
            if time.monotonic() > deadline:
                return
            start = time.perf_counter()
            try:
                status, data = request(conn, "POST", "/api/query", body, ctype)
                ok = status == expected and (status != 200 or b'"results"' in data)
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
            out.append((time.perf_counter() - start, ok))
    finally:
        conn.close()


def run_clients(port: int, per_client: list[list[tuple[bytes, str, int]]], deadline: float
                ) -> tuple[list[list], float]:
    """Every client's jobs at once; (per client [(seconds, ok)], wall seconds)."""
    outs: list[list] = [[] for _ in per_client]
    threads = [threading.Thread(target=client_loop, args=(port, jobs, deadline, out), daemon=True)
               for jobs, out in zip(per_client, outs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic() + REQUEST_TIMEOUT_S))
    return outs, time.perf_counter() - start


def load_phase(port: int, bodies, clients: int, queries: int, deadline: float) -> dict:
    per_client = [[(*bodies[(c * 7 + q) % len(bodies)], 200) for q in range(queries)]
                  for c in range(clients)]
    outs, wall = run_clients(port, per_client, deadline)
    done = [r for out in outs for r in out]
    ok = [s for s, good in done if good]
    ms = np.asarray(ok) * 1000 if ok else np.asarray([np.nan])
    return {"clients": clients, "sent": len(done), "planned": clients * queries,
            "failed": len(done) - len(ok), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "throughput_qps": len(ok) / wall}


def bad_phase(port: int, bodies, bad, queries: int, deadline: float) -> dict:
    """4 good clients while a fifth sends the bad requests in turn."""
    good = [[(*bodies[(c + q) % len(bodies)], 200) for q in range(queries)] for c in range(4)]
    mixed = [(body, ctype, status) for q in range(queries) for _, status, body, ctype in
             [bad[q % len(bad)]]]
    outs, _ = run_clients(port, good + [mixed], deadline)
    good_done = [g for out in outs[:4] for g in out]
    return {"good_ok": sum(g for _, g in good_done), "good_sent": len(good_done),
            "bad_as_expected": sum(g for _, g in outs[4]), "bad_sent": len(outs[4])}


# ---------------------------------------------------------------- the run

def run(tiny: bool = False, queries: int | None = None, clients: tuple[int, ...] = (1, 4, 8),
        index: str | None = None, model: str | None = None, threads: int | None = None,
        compile: bool = True, n: int = 10_000, max_seconds: float = 1200.0,
        workers: int | None = None, max_batch: int | None = None,
        method: str | None = None) -> list[dict]:
    queries = queries or (4 if tiny else 50)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="amgan-search-load-") as tmp:
        if index is None:
            model, embedder = _models(Path(tmp), tiny)
            index = Path(tmp) / "index"
            synthetic_indexes(index, embedder, 300 if tiny else n, method)
        from amgan_search.index.index_dir import load_info
        from amgan_search.index.methods import parse_method
        from amgan_search.index.serve.app import public

        schema = load_info(index)["schema"]
        pictures = photos(size=48 if tiny else 128)
        bodies = query_bodies(schema, pictures)
        extra = (["--workers", str(workers)] if workers else []) + (
            ["--max-batch", str(max_batch)] if max_batch else [])
        named = parse_method(method).name if method else None
        if method:  # AMGAN (the default) and the method: each query names one
            gan = f"amgan={model}" if model else "amgan"
            extra += ["--methods", f"{gan},{method}"]
            model = None
        own_bodies = query_bodies(schema, pictures, named) if method else None
        server = ServerProcess(Path(index), model, threads, compile and not tiny,
                               start_timeout=max_seconds / 2, extra=tuple(extra))
        # the server's own words, each absolute path cut to its last name as the server cuts them
        # for a client: a published table names no folder of the machine it ran on
        setup = "; ".join(public(line) for line in server.lines
                          if line.startswith(("loading", "loaded", "compiled in", "running uncompiled")))
        try:
            deadline = started + max_seconds
            rss_start = server.rss_mb()
            # An untimed warm-up round at the highest concurrency: the HTTP stack's first requests,
            # its thread pool and their allocator arenas settle, so before -> after shows growth.
            for warm in [bodies] + ([own_bodies] if own_bodies else []):
                load_phase(server.port, warm, max(clients), 2, deadline)
            rss_before = server.rss_mb()
            phases, own_phases = [], []
            for c in clients:
                phases.append(load_phase(server.port, bodies, c, queries, deadline))
                phases[-1]["rss_mb"] = server.rss_mb()
                if own_bodies:
                    own_phases.append(load_phase(server.port, own_bodies, c, queries, deadline))
            bad = bad_phase(server.port, bodies, bad_bodies(schema, pictures[0]), queries, deadline)
            conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
            healthy = request(conn, "GET", "/api/health")[0] == 200
            conn.close()
            rss_after = server.rss_mb()
        finally:
            server.stop()
    return rows(phases, bad, healthy, (rss_start, rss_before, rss_after), queries, tiny,
                timed_out=time.monotonic() > started + max_seconds, setup=setup) + \
        method_rows(named, own_phases, phases)


def method_rows(name: str | None, own: list[dict], amgan: list[dict]) -> list[dict]:
    """The method's phases against AMGAN's at the same client count (same run, same server)."""
    out = []
    for p, base in zip(own, amgan):
        c = p["clients"]
        out += [{"measure": f"{name}: {c} clients: p50 latency", "value": round(p["p50_ms"], 1),
                 "unit": "ms", "baseline": f"amgan p50 at {c} (speed-up)",
                 "baseline_value": round(base["p50_ms"], 1),
                 "ratio": round(base["p50_ms"] / p["p50_ms"], 2)},
                {"measure": f"{name}: {c} clients: p95 latency", "value": round(p["p95_ms"], 1),
                 "unit": "ms", "baseline": f"amgan p95 at {c} (speed-up)",
                 "baseline_value": round(base["p95_ms"], 1),
                 "ratio": round(base["p95_ms"] / p["p95_ms"], 2)},
                {"measure": f"{name}: {c} clients: throughput",
                 "value": round(p["throughput_qps"], 2), "unit": "q/s",
                 "baseline": f"amgan at {c}", "baseline_value": round(base["throughput_qps"], 2),
                 "ratio": round(p["throughput_qps"] / base["throughput_qps"], 2)},
                {"measure": f"{name}: {c} clients: failed requests",
                 "value": p["failed"] + p["planned"] - p["sent"], "unit": ""}]
    return out


def rows(phases, bad, healthy, rss, queries, tiny, timed_out,
         setup: str = "") -> list[dict]:
    note = (f"{queries} queries per client, 127.0.0.1" + ("; tiny models" if tiny else "")
            + (f"; server: {setup}" if setup else ""))
    out = []
    for p in phases:
        c = p["clients"]
        out += [{"measure": f"{c} clients: p50 latency", "value": round(p["p50_ms"], 1), "unit": "ms",
                 **({"note": note} if p is phases[0] else {})},
                {"measure": f"{c} clients: p95 latency", "value": round(p["p95_ms"], 1), "unit": "ms"},
                {"measure": f"{c} clients: throughput", "value": round(p["throughput_qps"], 2),
                 "unit": "q/s"},
                {"measure": f"{c} clients: failed requests", "value": p["failed"]
                 + p["planned"] - p["sent"], "unit": ""},
                {"measure": f"{c} clients: server memory after", "value": round(p["rss_mb"] or 0),
                 "unit": "MB"}]
    first, last = phases[0], phases[-1]
    out.append({"measure": f"throughput {last['clients']} vs {first['clients']} clients",
                "value": round(last["throughput_qps"], 2), "unit": "q/s",
                "baseline": f"{first['clients']} client(s)",
                "baseline_value": round(first["throughput_qps"], 2),
                "ratio": round(last["throughput_qps"] / first["throughput_qps"], 2)})
    out.append({"measure": f"p95 at {last['clients']} clients vs p50 at {first['clients']}",
                "value": round(last["p95_ms"], 1), "unit": "ms",
                "baseline": f"p50 at {first['clients']}", "baseline_value": round(first["p50_ms"], 1),
                "ratio": round(last["p95_ms"] / first["p50_ms"], 2)})
    rss_start, rss_before, rss_after = rss
    if rss_start and rss_before and rss_after:
        out.append({"measure": "server memory at start", "value": round(rss_start), "unit": "MB"})
        out.append({"measure": "server memory at the end vs after the warm-up round",
                    "value": round(rss_after), "unit": "MB", "baseline": "after warm-up",
                    "baseline_value": round(rss_before), "ratio": round(rss_after / rss_before, 3)})
    out.append({"measure": "bad phase: good queries answered", "value": bad["good_ok"], "unit": "",
                "baseline": "sent", "baseline_value": bad["good_sent"],
                "ratio": round(bad["good_ok"] / max(1, bad["good_sent"]), 3)})
    out.append({"measure": "bad phase: bad requests refused (413/400)", "value": bad["bad_as_expected"],
                "unit": "", "baseline": "sent", "baseline_value": bad["bad_sent"],
                "ratio": round(bad["bad_as_expected"] / max(1, bad["bad_sent"]), 3)})
    out.append({"measure": "server healthy at the end", "value": int(healthy), "unit": ""})
    if timed_out:
        out.append({"measure": "stopped at --max-seconds (counts are partial)", "value": 1, "unit": ""})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models and index, 4 queries each")
    parser.add_argument("--queries", type=int, default=None, help="queries per client [50]")
    parser.add_argument("--clients", default="1,4,8", help="client counts, comma-separated")
    parser.add_argument("--index", default=None, help="index folder [a synthetic 10,000-item one]")
    parser.add_argument("--model", default=None, help="manipulator folder [the shipped AMGAN]")
    parser.add_argument("--method", default=None,
                        help="a method also timed, beside AMGAN: adde, prototype, hybrid, a model "
                             "folder, NAME=DIR (index.methods)")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads")
    parser.add_argument("--no-compile", action="store_true", help="the server's --no-compile")
    parser.add_argument("--workers", type=int, default=None, help="the server's --workers")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="the server's --max-batch (1: no batching)")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="bound on the whole run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    result = run(tiny=args.tiny, queries=args.queries,
                 clients=tuple(int(c) for c in args.clients.split(",")), index=args.index,
                 model=args.model, threads=args.threads, compile=not args.no_compile,
                 max_seconds=args.max_seconds, workers=args.workers, max_batch=args.max_batch,
                 method=args.method)
    from perf.run import print_rows

    print_rows("serve_load", result, args.json)
    return 0


if __name__ == "__main__":  # `python -m perf.serve_load`, or the script: reach the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
