"""Embedder throughput on this machine: images/s at batch 64, with channels_last and bf16 autocast
on and off, each as a ratio to the plain fp32 contiguous baseline measured in the same run.

    python -m perf.embedder [--tiny]
"""

from __future__ import annotations

import argparse
import time

# (arch, image side, output stride or None for the classifier's default, timed batches)
CASES = [("resnet18", 64, None, 4), ("resnet18", 64, 32, 4), ("resnet50", 128, None, 2)]
TINY_CASES = [("resnet18", 32, None, 1)]
ROUNDS = 3
VARIANTS = [(False, False), (True, False), (False, True), (True, True)]  # (channels_last, bf16)


def _throughput(model, x, batches: int, channels_last: bool, bf16: bool) -> float:
    import torch

    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)
        x = x.contiguous()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.embed(x)  # warm-up: oneDNN picks its kernels for this layout and dtype here
        start = time.perf_counter()
        for _ in range(batches):
            model.embed(x)
        seconds = time.perf_counter() - start
    return batches * x.shape[0] / seconds


def run(tiny: bool = False) -> list[dict]:
    """One row per (model, variant): images/s and the ratio to fp32 contiguous of that model."""
    import torch

    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA

    batch = 8 if tiny else 64
    rows = []
    for arch, size, stride, batches in TINY_CASES if tiny else CASES:
        torch.manual_seed(0)
        model = AttributeClassifier(DEFAULT_SCHEMA, arch=arch, size=size, output_stride=stride).eval()
        name = f"{arch} {size}px stride {model.config['output_stride']}"
        x = torch.rand(batch, 3, size, size)
        # Variants take turns over several rounds and each keeps its best round, so a burst of
        # load from another process on a shared machine does not land on one variant only.
        best = [0.0] * len(VARIANTS)
        for _ in range(1 if tiny else ROUNDS):
            for i, (channels_last, bf16) in enumerate(VARIANTS):
                best[i] = max(best[i], _throughput(model, x, batches, channels_last, bf16))
        baseline = None
        for (channels_last, bf16), value in zip(VARIANTS, best):
            on = [s for s, flag in (("channels_last", channels_last), ("bf16", bf16)) if flag]
            label = " + ".join(on) or "fp32"
            if baseline is None:
                baseline = value
            rows.append({"measure": f"{name}, batch {batch}, {label}", "value": value,
                         "unit": "img/s", "baseline": f"{name} fp32 contiguous",
                         "baseline_value": baseline, "ratio": value / baseline})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds in all")
    args = parser.parse_args(argv)
    for r in run(tiny=args.tiny):
        print(f"{r['measure']:<60} {r['value']:8.1f} img/s  {r['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
