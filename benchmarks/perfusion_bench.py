#!/usr/bin/env python
"""Deconvolution throughput: voxel curves per second for plain, block-circulant and oSVD.

    python benchmarks/perfusion_bench.py [--voxels 400000] [--frames 50] [--repeats 3] [--out FILE.json]

Prints a table and writes JSON. Goal: >= 1 million curves/s for block-circulant SVD on
a 2-core CPU. The curves are realistic tissue curves plus noise; the best of ``--repeats`` runs
is kept, so compare ratios measured in one run rather than absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from stroke_helpers import perfusion as P


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voxels", type=int, default=400_000)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "perfusion.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    t_fine = np.arange(0, args.frames + 20, 0.05)
    aif_fine = P.arterial_input(t_fine)
    idx = np.round(np.arange(args.frames) / 0.05).astype(int)
    curve = P.tissue_curve(t_fine, aif_fine, 40, 5.0, delay=2.0)[idx]
    curves = (curve[None] + rng.normal(0, 2, (args.voxels, args.frames))).astype(np.float32)
    aif = aif_fine[idx]

    rows = []
    for method in ("ssvd", "bsvd", "osvd"):
        best = np.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            P.deconvolve(curves, aif, 1.0, method)
            best = min(best, time.perf_counter() - start)
        rows.append({"method": method, "seconds": round(best, 4), "curves_per_s": round(args.voxels / best)})

    result = {
        "benchmark": "perfusion deconvolution",
        "voxels": args.voxels,
        "frames": args.frames,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "goal_bsvd_curves_per_s": 1_000_000,
    }
    print(f"{'method':<8}{'seconds':>10}{'curves/s':>14}")
    for r in rows:
        print(f"{r['method']:<8}{r['seconds']:>10.3f}{r['curves_per_s']:>14,}")
    bsvd = next(r for r in rows if r["method"] == "bsvd")["curves_per_s"]
    print(f"block-circulant SVD: {bsvd / 1e6:.2f} M curves/s (goal >= 1 M): {'met' if bsvd >= 1e6 else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
