#!/usr/bin/env python
"""Phantom generation: seconds and bytes for the default synthetic dataset, as data_download.py makes it.

    python benchmarks/phantom_bench.py [--train-cases 94] [--test-cases 62] [--workers N] [--out FILE.json]

Prints a table and writes JSON. Goal: the default dataset (94 + 62 studies, seed 0, 4D series
written, the atlas's territories) in at most 2 minutes and 2 GB on a 2-core CPU. The dataset is
written to a temporary folder and removed; the time is the generator's alone (data_download.py
then reads every file back to verify it, a few seconds more). One run: the machine's other load
moves it by several seconds, so compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from stroke_helpers import locations
from stroke_helpers.engine import device_name
from stroke_helpers.phantom import PhantomConfig, generate_dataset
from stroke_helpers.phantom.dataset import PHANTOM_VERSION
from stroke_helpers.truth import read_config

GOAL_S, GOAL_BYTES = 120, 2e9


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-cases", type=int, default=94)
    ap.add_argument("--test-cases", type=int, default=62)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "phantom.json")
    args = ap.parse_args(argv)

    atlas = locations.atlas(None)
    config = PhantomConfig(atlas=str(atlas))
    with tempfile.TemporaryDirectory(prefix="phantom-bench-") as tmp:
        out = Path(tmp) / "synthetic"
        start = time.perf_counter()
        generate_dataset(out, args.train_cases, args.test_cases, 0, config, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        territories = read_config(out)["territories"]
        shutil.rmtree(out)

    result = {
        "benchmark": "phantom generation",
        "phantom_version": PHANTOM_VERSION,
        "train_cases": args.train_cases,
        "test_cases": args.test_cases,
        "territories": territories,
        "workers": args.workers or min(os.cpu_count() or 1, 8),
        "cpu_count": os.cpu_count(),
        "cpu": device_name(torch.device("cpu")),
        "seconds": round(seconds, 1),
        "bytes": size,
        "goal_seconds": GOAL_S,
        "goal_bytes": GOAL_BYTES,
    }
    print(f"{'studies':<10}{'workers':>8}{'seconds':>10}{'GB':>8}")
    print(f"{args.train_cases} + {args.test_cases:<5}{result['workers']:>8}{seconds:>10.0f}{size / 1e9:>8.2f}")
    met = seconds <= GOAL_S and size <= GOAL_BYTES
    print(f"goal <= {GOAL_S} s and <= {GOAL_BYTES / 1e9:.0f} GB on {result['cpu']}: {'met' if met else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
