"""The server under bursts of uploads that decode large: 8, then 16 concurrent POST /api/query,
each a PNG of 7200 x 5400 pixels (38.9 megapixels, under the loader's 40 MP limit) of 60-210 kB
(under the 10 MiB upload limit): a rendered garment photo blown up, as RGB, grey (L) and palette
(P) PNGs in turn. 127.0.0.1 only.

Measured from outside the server process: its resident memory (VmRSS, sampled every 20 ms) at its
warm level (after its own warm-up, a round of ordinary queries at the highest concurrency and one
upload of each kind alone),
its peak over each burst, and its level once the burst is answered and the server idle (after
a short settle); /api/health's latency, probed every 100 ms from start to end; every upload's
status (200 expected). Targets: peak under 2.5 GB, back within 10% of the warm level (either way)
after each burst, /api/health under 0.5 s throughout.

Bounded: a fixed number of uploads (--rounds per client per burst), each with a timeout, the
whole run under --max-seconds; the server is stopped at the end whatever happens.

    python perf/serve_uploads.py [--tiny] [--clients 8,16] [--rounds 1] [--no-compile]
        [--samples FILE.jsonl] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
SIDE = (7200, 5400)  # 38,880,000 pixels
TARGET_PEAK_MB, TARGET_BACK, TARGET_HEALTH_S = 2500.0, 0.10, 0.5


def big_uploads(side: tuple[int, int] = SIDE) -> list[tuple[str, bytes]]:
    """(mode, PNG bytes) of one rendered photo blown up to `side` on white: RGB, L and an opaque
    palette. Nearest-neighbour blocks and a white border compress to a few hundred kB at most."""
    from PIL import Image

    from amgan_search.synthetic import render, sample_scene

    photo = Image.fromarray(render(sample_scene(1000), 64)[0])
    width, height = side
    out = []
    for mode in ("RGB", "L", "P"):
        small = photo.convert("L") if mode == "L" else photo.quantize(256) if mode == "P" else photo
        canvas = Image.new(small.mode, side, 255 if mode == "L" else 0 if mode == "P"
                           else (255, 255, 255))
        if mode == "P":
            canvas.putpalette(small.getpalette())
            palette = np.asarray(small.getpalette()[:768]).reshape(-1, 3)
            canvas.paste(int(np.argmin(((palette - 255) ** 2).sum(1))), (0, 0, width, height))
        canvas.paste(small.resize((height, height), Image.NEAREST), ((width - height) // 2, 0))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG", compress_level=9)
        out.append((mode, buf.getvalue()))
    return out


# ---------------------------------------------------------------- watching the server

class Watch:
    """Samples the server's RSS every 20 ms and probes /api/health every 100 ms in two threads;
    `mark(name)` labels what follows, `peak(name)` and `health_max(name)` read a label's part."""

    def __init__(self, server, port: int):
        self.server, self.port = server, port
        self.rss: list[tuple[float, str, float]] = []
        self.health: list[tuple[float, str, float, int]] = []
        self.label = "start"
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._sample, daemon=True),
                        threading.Thread(target=self._probe, daemon=True)]
        for t in self.threads:
            t.start()

    def mark(self, label: str) -> None:
        self.label = label

    def _sample(self) -> None:
        while not self._stop.is_set():
            mb = self.server.rss_mb()
            if mb is not None:
                self.rss.append((time.monotonic(), self.label, mb))
            time.sleep(0.02)

    def _probe(self) -> None:
        while not self._stop.is_set():
            label, start = self.label, time.perf_counter()
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                conn.request("GET", "/api/health")
                status = conn.getresponse().status
                conn.close()
            except (OSError, http.client.HTTPException):
                status = 0
            self.health.append((time.monotonic(), label, time.perf_counter() - start, status))
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(5)

    def peak(self, label: str) -> float:
        return max((mb for _, lab, mb in self.rss if lab == label), default=float("nan"))

    def health_max(self, label: str | None = None) -> float:
        return max((s for _, lab, s, _ in self.health if label in (None, lab)), default=float("nan"))

    def health_failed(self) -> int:
        return sum(status != 200 for *_, status in self.health)


def settle(server, seconds: float) -> float:
    """The server's RSS once it stops falling (or after `seconds`)."""
    last, deadline = server.rss_mb(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.rss_mb()
        if now is not None and last is not None and abs(now - last) < 1.0:
            return now
        last = now
    return last


# ---------------------------------------------------------------- the run

def burst(port: int, bodies, clients: int, rounds: int, deadline: float) -> list[tuple[float, int]]:
    """`clients` threads at once, each sending `rounds` uploads (the body kinds in turn);
    (seconds, status) of each."""
    from perf.serve_load import REQUEST_TIMEOUT_S, request

    done: list[tuple[float, int]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        for r in range(rounds):
            if time.monotonic() > deadline:
                break
            body, ctype = bodies[(c + r) % len(bodies)]
            start = time.perf_counter()
            try:
                status, _ = request(conn, "POST", "/api/query", body, ctype)
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
            with lock:
                done.append((time.perf_counter() - start, status))
        conn.close()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    return done


def run(tiny: bool = False, clients: tuple[int, ...] = (8, 16), rounds: int = 1,
        compile: bool = True, threads: int | None = None, n: int = 10_000,
        max_seconds: float = 900.0, samples: str | None = None) -> list[dict]:
    from perf.serve_load import (ServerProcess, _models, load_phase, photos, query_bodies,
                                       synthetic_index)
    from amgan_search.index.serve.client import multipart
    from amgan_search.index.index_dir import load_info

    started = time.monotonic()
    side = (720, 540) if tiny else SIDE
    with tempfile.TemporaryDirectory(prefix="amgan-search-uploads-") as tmp:
        model, embedder = _models(Path(tmp), tiny)
        index = Path(tmp) / "index"
        synthetic_index(index, embedder, 300 if tiny else n)
        schema = load_info(index)["schema"]
        name, values = next(iter(schema.items()))
        uploads = big_uploads(side)
        bodies = [multipart({"targets": json.dumps({name: values[i % len(values)]}), "k": "10"},
                            {"image": (f"big-{mode}.png", data)})
                  for i, (mode, data) in enumerate(uploads)]
        server = ServerProcess(index, model, threads, compile and not tiny,
                               start_timeout=max_seconds / 2)
        watch = None
        try:
            deadline = started + max_seconds
            watch = Watch(server, server.port)
            # The warm level: ordinary queries at the highest concurrency, as serve_load warms up,
            # then one upload of each kind alone: a server that has answered uploads before.
            watch.mark("warm-up")
            ordinary = query_bodies(schema, photos(size=48 if tiny else 128))
            load_phase(server.port, ordinary, max(clients), 2, deadline)
            burst(server.port, bodies, 1, len(bodies), deadline)
            warm = settle(server, 10)
            phases = []
            for c in clients:
                watch.mark(f"{c} uploads")
                done = burst(server.port, bodies, c, rounds, deadline)
                watch.mark(f"after {c}")
                after = settle(server, 15)
                phases.append({"clients": c, "sent": len(done), "planned": c * rounds,
                               "ok": sum(s == 200 for _, s in done),
                               "p50_s": float(np.median([s for s, _ in done])) if done else None,
                               "peak_mb": watch.peak(f"{c} uploads"), "after_mb": after,
                               "health_max_s": watch.health_max(f"{c} uploads")})
            watch.mark("end")
            time.sleep(0.3)
        finally:
            if watch is not None:
                watch.stop()
            server.stop()
        if samples:
            with open(samples, "w") as f:
                for t, label, mb in watch.rss:
                    f.write(json.dumps({"t": round(t - started, 3), "phase": label,
                                        "rss_mb": round(mb, 1)}) + "\n")
                for t, label, s, status in watch.health:
                    f.write(json.dumps({"t": round(t - started, 3), "phase": label,
                                        "health_s": round(s, 4), "status": status}) + "\n")
    return rows(phases, warm, watch, uploads, side, rounds, tiny,
                timed_out=time.monotonic() > started + max_seconds)


def rows(phases, warm, watch, uploads, side, rounds, tiny, timed_out) -> list[dict]:
    kinds = ", ".join(f"{mode} {len(data) / 1000:.0f} kB" for mode, data in uploads)
    note = (f"{side[0]}x{side[1]} PNG uploads ({kinds}), {rounds} per client per burst, "
            "127.0.0.1" + ("; tiny models and pictures" if tiny else ""))
    out = [{"measure": "server memory, warm", "value": round(warm), "unit": "MB", "note": note}]
    for p in phases:
        c = p["clients"]
        out += [
            {"measure": f"{c} uploads: answered 200", "value": p["ok"], "unit": "",
             "baseline": "planned", "baseline_value": p["planned"],
             "ratio": round(p["ok"] / max(1, p["planned"]), 3)},
            {"measure": f"{c} uploads: median answer", "value": round(p["p50_s"] or 0, 2),
             "unit": "s"},
            {"measure": f"{c} uploads: peak memory (target < {TARGET_PEAK_MB:.0f} MB)",
             "value": round(p["peak_mb"]), "unit": "MB", "baseline": "warm",
             "baseline_value": round(warm), "ratio": round(p["peak_mb"] / warm, 3)},
            {"measure": f"{c} uploads: memory after (target within {TARGET_BACK:.0%} of warm)",
             "value": round(p["after_mb"]), "unit": "MB", "baseline": "warm",
             "baseline_value": round(warm), "ratio": round(p["after_mb"] / warm, 3)},
            {"measure": f"{c} uploads: slowest /api/health (target < {TARGET_HEALTH_S} s)",
             "value": round(p["health_max_s"], 3), "unit": "s"},
        ]
    out.append({"measure": "slowest /api/health, whole run", "value": round(watch.health_max(), 3),
                "unit": "s"})
    out.append({"measure": "/api/health probes, failed", "value": watch.health_failed(), "unit": "",
                "baseline": "sent", "baseline_value": len(watch.health)})
    met = all(p["ok"] == p["planned"] and p["peak_mb"] < TARGET_PEAK_MB
              and abs(p["after_mb"] / warm - 1) <= TARGET_BACK
              and p["health_max_s"] < TARGET_HEALTH_S for p in phases)
    met = met and watch.health_failed() == 0 and watch.health_max() < TARGET_HEALTH_S
    out.append({"measure": "every target met", "value": int(met), "unit": ""})
    if timed_out:
        out.append({"measure": "stopped at --max-seconds (counts are partial)", "value": 1,
                    "unit": ""})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models, index and pictures")
    parser.add_argument("--clients", default="8,16", help="concurrent uploads per burst")
    parser.add_argument("--rounds", type=int, default=1, help="uploads per client per burst [1]")
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads")
    parser.add_argument("--no-compile", action="store_true", help="the server's --no-compile")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="bound on the whole run")
    parser.add_argument("--samples", default=None,
                        help="write every memory sample and health probe here (JSON lines)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    from perf.run import print_rows

    print_rows("serve_uploads", run(
        tiny=args.tiny, clients=tuple(int(c) for c in args.clients.split(",")),
        rounds=args.rounds, compile=not args.no_compile, threads=args.threads,
        max_seconds=args.max_seconds, samples=args.samples), args.json)


if __name__ == "__main__":  # `python -m perf.serve_uploads`, or the script: reach the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
