#!/usr/bin/env python
"""Get the data: ISLES 2018 from an archive or URL, or the synthetic phantom dataset; verify a tree.

    python data_download.py isles2018 --archive ISLES2018_Training.zip [--md5 HEX] [--out DIR] [--force]
    python data_download.py isles2018 --url URL --md5 HEX [--out DIR] [--force]
    python data_download.py isles24 --from DIR [--out DIR] [--series] [--force]
    python data_download.py atlas [--out DIR] [--from SRC]
    python data_download.py synthetic [--out DIR] [--atlas DIR] [--train-cases 94] [--test-cases 62] [--seed 0] [--force]
    python data_download.py verify DIR

The data folder is ``--out``, else ``$STROKE_DATA_DIR``, else ``./data``; ISLES 2018 goes to
``DATA/isles2018``, ISLES 2024 (converted from a local copy) to ``DATA/isles24``, the arterial territory atlas (JHU, CC BY-SA 4.0) to ``DATA/atlas`` and the phantom to
``DATA/synthetic`` (built with the atlas's territories when ``DATA/atlas`` holds it, else with
geometric territories and a warning). Importable: :func:`main` takes argv.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stroke_helpers import locations
from stroke_helpers.arguments import at_least
from stroke_helpers.download import ATLAS_CREDIT, DownloadError, fetch_arterial_atlas, fetch_isles2018
from stroke_helpers.files import WriteError
from stroke_helpers.isles import IslesError, format_summary, verify_dataset


def _isles(args) -> int:
    out = locations.dataset("isles2018", args.out)
    splits = fetch_isles2018(out, archive=args.archive, url=args.url, md5=args.md5, force=args.force)
    print(f"installed {', '.join(splits)} into {out}")
    return _verify(argparse.Namespace(dir=out))


def _isles24(args) -> int:
    from stroke_helpers.isles24 import MANIFEST, convert, read_manifest

    out = convert(args.source, args.out, series=args.series, force=args.force, progress=not args.no_progress)
    cases = read_manifest(out)["cases"]
    print(f"converted {len(cases)} ISLES 2024 cases from {args.source} into {out} (sources and md5s: {out / MANIFEST})")
    summaries, problems = verify_dataset(out)
    print(format_summary(summaries))
    for p in problems:  # only what the conversion keeps on purpose can be left here (an empty mask)
        print(f"note: {p}")
    return 0


def _atlas(args) -> int:
    out = locations.atlas(args.out)
    fetch_arterial_atlas(out, source=args.source)
    print(f"arterial territory atlas in {out}\n  {ATLAS_CREDIT}")
    return 0


def _synthetic(args) -> int:
    from stroke_helpers.phantom import PhantomConfig, generate_dataset

    out, atlas = locations.dataset("synthetic", args.out), locations.atlas(args.atlas)
    config = PhantomConfig(write_pwi=not args.no_pwi, atlas=str(atlas))
    start = time.perf_counter()
    generate_dataset(out, args.train_cases, args.test_cases, args.seed, config, workers=args.workers, force=args.force)
    print(
        f"generated {args.train_cases} training + {args.test_cases} test studies in {out} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    return _verify(argparse.Namespace(dir=out))


def _verify(args) -> int:
    summaries, problems = verify_dataset(args.dir)
    if summaries:
        print(format_summary(summaries))
    if problems:
        print(f"\n{len(problems)} problem(s) in {args.dir}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{args.dir}: OK")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data_download.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    isles = sub.add_parser("isles2018", help="install ISLES 2018 from an archive you have, or a URL")
    src = isles.add_mutually_exclusive_group(required=True)
    src.add_argument("--archive", type=Path, help="ISLES2018_Training.zip or ISLES2018_Testing.zip")
    src.add_argument("--url", help="where to download the archive from (needs --md5)")
    isles.add_argument("--md5", help="expected md5 (default: the official archive's, by file name)")
    isles.add_argument("--out", help="dataset folder (default: $STROKE_DATA_DIR/isles2018 or ./data/isles2018)")
    isles.add_argument(
        "--force", action="store_true", help="replace installed splits (TRAINING/, TESTING/ of case_N folders only)"
    )
    isles.set_defaults(func=_isles)

    i24 = sub.add_parser("isles24", help="convert a local copy of ISLES 2024 (BIDS) into the layout the loader reads")
    i24.add_argument("--from", dest="source", type=Path, required=True, help="the unpacked training release")
    i24.add_argument("--out", help="dataset folder (default: $STROKE_DATA_DIR/isles24 or ./data/isles24)")
    i24.add_argument("--series", action="store_true", help="also convert the 4D CTP series (large)")
    i24.add_argument("--force", action="store_true", help="replace a dataset this command converted (nothing else)")
    i24.add_argument("--no-progress", action="store_true", help="no progress bar")
    i24.set_defaults(func=_isles24)

    atl = sub.add_parser("atlas", help="fetch the arterial territory atlas (checksum-pinned) for the phantom")
    atl.add_argument("--out", help="atlas folder (default: $STROKE_DATA_DIR/atlas or ./data/atlas)")
    atl.add_argument("--from", dest="source", help="install from a local copy (md5s checked) instead of downloading")
    atl.set_defaults(func=_atlas)

    syn = sub.add_parser("synthetic", help="generate the synthetic ISLES-layout dataset (digital phantom)")
    syn.add_argument("--out", help="dataset folder (default: $STROKE_DATA_DIR/synthetic or ./data/synthetic)")
    syn.add_argument("--atlas", help="arterial territory atlas folder (default: DATA/atlas; geometric if absent)")
    syn.add_argument("--train-cases", type=at_least(0), default=94)
    syn.add_argument("--test-cases", type=at_least(0), default=62)
    syn.add_argument("--seed", type=at_least(0), default=0)
    syn.add_argument("--workers", type=at_least(1), default=None, help="processes (default: all cores)")
    syn.add_argument("--no-pwi", action="store_true", help="skip writing the 4D series (most of the disk)")
    syn.add_argument(
        "--force", action="store_true", help="replace a synthetic dataset this command wrote (nothing else)"
    )
    syn.set_defaults(func=_synthetic)

    ver = sub.add_parser("verify", help="check a dataset tree and summarise it")
    ver.add_argument("dir", type=Path)
    ver.set_defaults(func=_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (DownloadError, IslesError, FileExistsError, WriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was installed; the next run starts again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
