"""Query latency in a warm process: today's fp32 path against bf16 + channels_last and compiled,
and another method's query beside AMGAN's (`--method`, e.g. adde).

One run times, on the same 10,000-item index and query photo, each variant's stages (edit, embed,
manipulate, search, metadata: those its method has) and the whole `Retriever.query`, interleaved
so that drift on a shared machine hits all alike; each row gives p50 (p95 in the note) and the
speed-up over the fp32 baseline (the AMGAN query, eager, the thread policy's count) measured in
the same run. The variants: "fp32" (the baseline: bit for bit the plain networks), "bf16"
(autocast and channels_last, forced even where the CPU lacks native bf16, so the cost of
emulation shows), "compiled" (torch.compile with freezing, in the precision "auto" picks here),
and, where torch's default thread count differs from the policy's, "fp32, torch default threads"
(today's path before the thread policy) and "compiled, torch default threads"; with
`--method M`, "M (fp32)": the query by method M (`index.methods`), fp32 and eager as the
baseline, over the same rows (a method with its own encoder, `adde` or the hybrid, searches an
index of those rows embedded with it). "top-10 identical" counts, over 100 rendered photos each
edited toward a colour, the queries whose ten result ids are the fp32 baseline's, in order and
as a set (M's answers differ by design: timed, not compared).

The index: the fp32 embeddings of 1,000 rendered catalog images, where the neighbours of a query
come from, padded to 10,000 with random unit vectors (search cost depends on the count and
dimension only). The shipped models when present, else untrained ones of the same shapes (cost
does not depend on weights); `--method` names a shipped model or a folder (`index.methods`).
`--tiny` leaves out the compiled variant (compiling takes minutes).

    python perf/query_latency.py [--tiny] [--repeats 50] [--queries 100] [--method M] [--json]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from amgan_search.errors import UserError

def _models(tiny: bool):
    """(embedder, manipulator, note), fresh instances: shipped when present, else untrained (seeded,
    so every call gives the same weights)."""
    import torch

    from amgan_search.editors import Manipulator
    from amgan_search.index.embed import Embedder, load_embedder
    from amgan_search.registry import load_model, shipped_model

    if not tiny:
        try:
            shipped_model("classifier-cam")
            shipped_model("amgan")
            return (load_embedder(None, device="cpu"), load_model(None, "editor", device="cpu"),
                    "shipped classifier-cam + amgan")
        except UserError:
            pass
    from amgan_search.nets.amgan import EditNet
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA

    size = 32 if tiny else 64
    conv, blocks = (8, 1) if tiny else (64, 6)  # the shipped 64x64 generator's widths (its card)
    torch.manual_seed(0)
    classifier = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=size).eval()
    net = EditNet(DEFAULT_SCHEMA.condition_dim, conv_dim=conv, repeat_num=blocks,
                  attention="generator", upsample="resize").eval()
    config = {"kind": "amgan", "schema": DEFAULT_SCHEMA.to_dict(), "size": size}
    manipulator = Manipulator(net.requires_grad_(False), DEFAULT_SCHEMA, size,
                              classifier.requires_grad_(False), config, device="cpu")
    embedder = Embedder(classifier, size=size, dim=classifier.embed_dim, digest="untrained")
    return embedder, manipulator, f"untrained resnet18 + generator({conv}, {blocks} blocks) at {size}px"


def _photo(seed: int, size: int):
    """A rendered catalog-like photo and its attributes."""
    from amgan_search.synthetic import render, sample_scene

    scene = sample_scene(seed)
    return render(scene, size)[0], scene.attributes


def _index(out: Path, embedder, n: int, real: int, schema=None) -> None:
    """`real` rendered images embedded in fp32, padded with random unit vectors to n rows, with
    the attributes of `schema` (None: the default synthetic one)."""
    import pandas as pd

    from amgan_search.images import fit_square, to_tensor
    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.index_dir import item_records
    from amgan_search.schema import DEFAULT_SCHEMA

    schema = schema or DEFAULT_SCHEMA
    rng = np.random.default_rng(0)
    photos = [_photo(seed, embedder.size) for seed in range(real)]
    vectors = [embedder(to_tensor([fit_square(p, embedder.size)[0] for p, _ in photos[i:i + 64]]))
               for i in range(0, real, 64)]
    pad = rng.standard_normal((n - real, embedder.dim)).astype(np.float32)
    v = np.concatenate(vectors + [pad / np.linalg.norm(pad, axis=1, keepdims=True)])
    labels = np.stack([rng.integers(0, len(a.values), n) for a in schema.attributes], 1)
    labels[:real] = [schema.encode({k: v for k, v in attrs.items() if k in schema.names})
                     for _, attrs in photos]
    items = pd.DataFrame({"id": [f"item{i}" for i in range(n)],
                          "path": [f"/catalog/img/{i}.jpg" for i in range(n)],
                          "split": "train", "category": "top", "gender": rng.choice(["female", "male"], n)})
    build_from_vectors(out, v, labels, item_records(items, labels, schema),
                       schema, embedder.meta(), index_type="auto", progress=False)


def _method_retrievers(spec: str, tmp: Path, base: Path, tiny: bool, n: int, real: int,
                       facts: dict) -> dict:
    """{variant name: the Retriever of the method `spec`} timed beside AMGAN: fp32 and eager as
    the baseline and, but with --tiny, compiled as `serve` runs it; over the base index, or, for a
    method with its own encoder (adde, the hybrid), over an index of the same rows embedded with
    it. Separate networks each (a precision changes its modules)."""
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.methods import parse_method
    from amgan_search.index.retrieve import Retriever

    method = parse_method(spec)
    index_dir, own = base, method.kind in ("feature", "hybrid")
    if own:
        index_dir = tmp / "own"
        embedder = load_embedder(method.encoder_dir(), device="cpu")
        _index(index_dir, embedder, n, real, embedder.model.schema)
    out = {}
    for name, precision, compiled in [("fp32", "fp32", False)] + ([] if tiny else
                                                                  [("compiled", "auto", True)]):
        embedder = load_embedder(method.encoder_dir(), device="cpu") if own else _models(tiny)[0]
        r = Retriever(index_dir, embedder=embedder, method=method, device="cpu",
                      precision=precision, progress=False)
        space = r.space  # loaded now, as a server loads it at start
        facts["about"] = (f"{method.kind} method; its space: {type(space).__name__}, "
                          f"{space.embedder.dim}-d at {space.embedder.size} px")
        variant = f"{method.name} ({name})"
        if compiled and not _compile(r, variant, facts):
            continue
        out[variant] = r
    return out


def _retrievers(index_dir: Path, tiny: bool, threads: int, default_threads: int) -> tuple[dict, dict]:
    """{variant: (Retriever, torch threads)}, separate networks each (a precision changes its
    modules; compiled code keeps the thread count it was compiled with), and facts for the notes."""
    import torch

    from amgan_search.index.retrieve import Retriever
    from amgan_search.index.search import Searcher

    searcher = Searcher(index_dir, use_gpu=False)
    plan = [("fp32", "fp32", False, threads), ("bf16", "bf16", False, threads)]
    if not tiny:
        plan.append(("compiled", "auto", True, threads))
        if default_threads != threads:
            plan.append(("compiled, torch default threads", "auto", True, default_threads))
    out, facts = {}, {"compile_s": {}}
    for name, precision, compiled, n in plan:
        embedder, manipulator, facts["models"] = _models(tiny)
        r = Retriever(index_dir, searcher=searcher, embedder=embedder, manipulator=manipulator,
                      precision=precision)
        torch.set_num_threads(n)
        if compiled and not _compile(r, name, facts):
            continue
        out[name] = (r, n)
    if default_threads != threads:
        out["fp32, torch default threads"] = (out["fp32"][0], default_threads)
    torch.set_num_threads(threads)
    return out, facts


def _compile(r, name: str, facts: dict) -> bool:
    """Compile r's networks, then show that the compiled code is what a query runs (a call that
    would miss it raises)."""
    from amgan_search.device import FastPath

    def say(line: str) -> None:
        print(f"{name}: {line}", file=sys.stderr)

    start = time.perf_counter()
    if not r.compile(progress=say, batch_sizes=(1,)):  # one query at a time here
        return False
    facts["compile_s"][name] = time.perf_counter() - start
    FastPath.stance = "fail_on_recompile"
    try:
        r.query(_photo(10**6, 96)[0], {"color": "red"}, k=10)
    finally:
        FastPath.stance = "eager_on_recompile"
    facts["auto"] = r.precision
    return True


def _agreement(retrievers: dict, queries: int) -> dict[str, tuple[float, float]]:
    """Per variant: the shares of queries whose top-10 ids are the fp32 baseline's (in order; as
    a set). The rendered catalog has about 15 near-duplicates per colour and sleeve, so the order
    within the top 10 is the strict test."""
    from amgan_search.schema import DEFAULT_SCHEMA

    colours = DEFAULT_SCHEMA.attribute("color").values
    same = {name: [0, 0] for name in retrievers if name != "fp32"}
    for q in range(queries):
        photo, _ = _photo(100_000 + q, 96)
        targets = {"color": colours[q % len(colours)]}
        want = [r.id for r in retrievers["fp32"].query(photo, targets, k=10).results]
        for name, counts in same.items():
            got = [r.id for r in retrievers[name].query(photo, targets, k=10).results]
            counts[0] += got == want
            counts[1] += set(got) == set(want)
    return {name: (ordered / queries, as_set / queries) for name, (ordered, as_set) in same.items()}


def _stages(r, photo, targets) -> dict:
    """{stage: call} of the stages r's method has, then the whole query."""
    vec = r.embed_image(photo)
    searcher = r.space.searcher
    rows, scores = searcher.search(vec, 10)
    stages = {"edit": lambda: r.edit(photo, targets)} if r.method.edits_pixels else {}
    stages["embed"] = lambda: r.embed_image(photo)
    if r.space.manipulates:
        stages["manipulate"] = lambda: r.manipulate(vec, targets)
    stages.update({"search": lambda: searcher.search(vec, 10),
                   "metadata": lambda: searcher.results(rows, scores),
                   "whole query": lambda: r.query(photo, targets, k=10)})
    return stages


def _time(retrievers: dict, repeats: int) -> dict:
    """{variant: {stage: [seconds]}}, interleaved; each variant at its thread count."""
    import torch

    photo, _ = _photo(424242, 96)
    calls = {name: _stages(r, photo, {"color": "red"}) for name, (r, _) in retrievers.items()}
    times = {name: {s: [] for s in calls[name]} for name in retrievers}
    for rep in range(repeats + 1):  # the first round warms up: allocations, kernel choice, caches
        for name, (_, n) in retrievers.items():
            torch.set_num_threads(n)
            for stage, fn in calls[name].items():
                start = time.perf_counter()
                fn()
                if rep:
                    times[name][stage].append(time.perf_counter() - start)
    return times


def run(tiny: bool = False, repeats: int | None = None, queries: int | None = None,
        n: int = 10_000, method: str | None = None) -> list[dict]:
    import torch

    from amgan_search.device import native_bf16, set_torch_threads

    repeats, queries = repeats or (3 if tiny else 50), queries or (5 if tiny else 100)
    n, real = (2_000, 100) if tiny else (n, 1_000)
    default_threads = torch.get_num_threads()  # torch's own default, or OMP_NUM_THREADS
    threads = set_torch_threads(None, "query")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            index_dir = Path(tmp) / "index"
            embedder, _, _ = _models(tiny)
            _index(index_dir, embedder, n, real)
            retrievers, facts = _retrievers(index_dir, tiny, threads, default_threads)
            agree = _agreement({k: r for k, (r, n) in retrievers.items() if n == threads}, queries)
            if method:  # another method's answers differ by design: timed, not compared
                variants = _method_retrievers(method, Path(tmp), index_dir, tiny, n, real, facts)
                retrievers.update({name: (r, threads) for name, r in variants.items()})
                facts["method"] = list(variants)
            times = _time(retrievers, repeats)
    finally:
        torch.set_num_threads(default_threads)
    facts.update(threads=threads, default_threads=default_threads, native=native_bf16("cpu"),
                 repeats=repeats, queries=queries, n=n)
    return _rows(times, agree, facts)


def _rows(times: dict, agree: dict, facts: dict) -> list[dict]:
    p = {name: {s: np.percentile(np.asarray(ts) * 1000, [50, 95]) for s, ts in st.items()}
         for name, st in times.items()}
    note = (f"{facts['repeats']} runs; {facts['n']:,}-item index; {facts['models']}; "
            f"{facts['threads']} thread(s) (policy), torch default {facts['default_threads']}; "
            f"native bf16: {'yes' if facts['native'] else 'no'}")
    rows = []
    for name in p:
        about = f"{facts['about']}; " if name in facts.get("method", ()) else ""
        for stage, (p50, p95) in p[name].items():
            row = {"measure": f"{name}: {stage} p50", "value": round(p50, 3), "unit": "ms",
                   "note": f"p95 {p95:.3f} ms; " + about + note}
            if name != "fp32" and stage in p["fp32"]:
                base = p["fp32"][stage][0]
                row.update(baseline=f"fp32 {stage} p50 (speed-up)", baseline_value=round(base, 3),
                           ratio=round(base / p50, 3))
            rows.append(row)
        rows.append({"measure": f"{name}: whole query p95", "value": round(p[name]["whole query"][1], 3),
                     "unit": "ms"})
    parts = sum(v[0] for s, v in p["fp32"].items() if s != "whole query")
    rows.append({"measure": "fp32: whole query p50 vs sum of stage p50s",
                 "value": round(p["fp32"]["whole query"][0], 3), "unit": "ms",
                 "baseline": "sum of stages", "baseline_value": round(parts, 3),
                 "ratio": round(p["fp32"]["whole query"][0] / parts, 3)})
    for name, (ordered, as_set) in agree.items():
        rows.append({"measure": f"{name}: top-10 identical to fp32, in order", "unit": "%",
                     "value": round(100 * ordered, 1), "note": f"{facts['queries']} queries; target 95%"})
        rows.append({"measure": f"{name}: top-10 identical to fp32, as a set", "unit": "%",
                     "value": round(100 * as_set, 1), "note": f"{facts['queries']} queries"})
    for name, seconds in facts["compile_s"].items():
        rows.append({"measure": f"{name} ({facts['auto']}): compile and warm-up",
                     "value": round(seconds, 1), "unit": "s"})
    for name in facts.get("method", ()):  # against AMGAN's query run the same way
        kind = name[name.rindex("(") + 1:-1]
        if kind in p:
            mine, amgan = p[name]["whole query"][0], p[kind]["whole query"][0]
            rows.append({"measure": f"{name}: whole query p50, speed-up over AMGAN's ({kind})",
                         "value": round(mine, 3), "unit": "ms",
                         "baseline": f"{kind}: whole query p50", "baseline_value": round(amgan, 3),
                         "ratio": round(amgan / mine, 3)})
    return rows


def main(argv=None) -> int:
    import argparse

    import json

    from perf.run import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds")
    parser.add_argument("--repeats", type=int, default=None, help="queries timed per stage")
    parser.add_argument("--queries", type=int, default=None,
                        help="queries compared with fp32 for top-10 agreement")
    parser.add_argument("--method", default=None,
                        help="a method timed beside AMGAN's query: adde, prototype, hybrid, a "
                             "model folder, NAME=DIR (index.methods)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(tiny=args.tiny, repeats=args.repeats, queries=args.queries, method=args.method)
    print(json.dumps(rows, indent=2) if args.json else
          format_table([{"benchmark": "query_latency", **r} for r in rows]))
    return 0


if __name__ == "__main__":  # `python -m perf.query_latency`, or the script: reach the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
