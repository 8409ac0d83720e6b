"""Seconds per training iteration of the `amgan` and `stargan` presets, measured in the same run.

One cycle is one G update and n_critic D updates; an iteration (StarGAN's counting, the trainer's)
is one D update, so seconds per iteration = seconds per cycle / n_critic. Random images and labels
at the default synthetic schema: the cost of a step does not depend on what the pixels show. The
`amgan` preset runs its CAM and perceptual features through a ResNet-18 AttributeClassifier at the
same size, untrained (its weights do not change the cost).

    python perf/train_step.py [--tiny] [--cycles 3] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _classifier(schema, size):
    from amgan_search.nets.classifier import AttributeClassifier

    return AttributeClassifier(schema, arch="resnet18", size=size).eval()


def _setup(method, schema, classifier, size, batch, overrides):
    from amgan_search.train.config import preset
    from amgan_search.train.trainer import AmganTrainer

    cfg = preset(method, size=size, batch_size=batch, **overrides)
    torch.manual_seed(0)
    trainer = AmganTrainer(cfg, schema, classifier if cfg.needs_classifier else None)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g)
    y = torch.stack([torch.randint(0, len(a.values), (batch,), generator=g)
                     for a in schema.attributes], 1)
    ref = torch.rand(batch, 3, size, size, generator=g)
    return cfg, trainer, x, y, (lambda trg, attribute: (ref, torch.ones(batch)))


def _cycle(cfg, trainer, x, y, reference, k, m):
    """Seconds of the n_critic D updates and of the G update of one cycle."""
    t0 = time.perf_counter()
    for i in range(cfg.n_critic):
        trainer.d_step(x, y, (k + i) % m)
    t1 = time.perf_counter()
    trainer.g_step(x, y, k % m, reference)
    return (t1 - t0) / cfg.n_critic, time.perf_counter() - t1


def run(tiny: bool = False, cycles: int = 3, methods=("amgan", "stargan"),
        **overrides) -> list[dict]:
    """A row per method: seconds per iteration (a D update, G every n_critic), and its ratio to stargan.

    The methods' cycles are interleaved and each time is the minimum over the cycles: on a shared
    machine, other load only ever adds time, and it then falls on every method alike.
    """
    from amgan_search.schema import synthetic_schema

    schema = synthetic_schema(("color", "sleeve"))
    size, batch = (32, 4) if tiny else (64, 16)
    if tiny:
        overrides = {"g_conv_dim": 8, "g_repeat_num": 1, "d_conv_dim": 8, "d_repeat_num": 3,
                     **overrides}
        cycles = 1
    torch.manual_seed(0)
    classifier = _classifier(schema, size) if "amgan" in methods else None
    setups = {m: _setup(m, schema, classifier, size, batch, overrides) for m in methods}
    for s in setups.values():
        _cycle(*s, 0, schema.n_attributes)  # warm-up: allocator, kernels
    times = {m: [] for m in methods}
    for k in range(cycles):
        for m, s in setups.items():
            times[m].append(_cycle(*s, k, schema.n_attributes))
    per_iter = {}
    rows = []
    for m in methods:
        cfg = setups[m][0]
        d, g = min(t[0] for t in times[m]), min(t[1] for t in times[m])
        per_iter[m] = (cfg.n_critic * d + g) / cfg.n_critic
        rows.append({"measure": f"{m} step, {size}px, batch {batch}, n_critic {cfg.n_critic}",
                     "value": round(per_iter[m], 4), "unit": "s/iter",
                     "s_per_d_update": round(d, 4), "s_per_g_update": round(g, 4), **overrides})
    if "stargan" in per_iter:
        # The plain reference step (StarGAN: no attention, CAM, D_C or perceptual loss).
        for r, m in zip(rows, methods):
            r.update(baseline="stargan step", baseline_value=round(per_iter["stargan"], 4),
                     ratio=per_iter[m] / per_iter["stargan"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="32x32, batch 4, tiny widths (a smoke run)")
    ap.add_argument("--cycles", type=int, default=3,
                    help="timed cycles per method (the minimum is reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--methods", default="amgan,stargan", help="comma-separated presets")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (default: fp32)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    ap.add_argument("--d-conv-dim", type=int, default=None, help="D width (default: the config's)")
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"bf16": bool(args.bf16)}
    if args.channels_last:
        overrides["channels_last"] = True
    if args.d_conv_dim:
        overrides["d_conv_dim"] = args.d_conv_dim
    rows = run(args.tiny, args.cycles, tuple(args.methods.split(",")), **overrides)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
