"""Command line: ``python -m stroke_helpers {train,cascade,evaluate,predict,baseline,reproduce,ship,explore} ...``.

The same functions the notebooks call. Bad arguments and bad input print one line starting
with ``error:`` and exit with status 2; ``--help`` on any command lists its options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import locations
from .architectures import ARCHITECTURES, DEFAULT
from .arguments import at_least, folds
from .modalities import ALL
from .presets import PRESETS


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="ISLES-layout folder (with TRAINING/)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--modalities", default=ALL, help=f"comma-separated, from {ALL}")
    p.add_argument(
        "--architecture",
        default=DEFAULT,
        choices=list(ARCHITECTURES),
        help="the model: " + "; ".join(f"{a.name}: {a.summary}" for a in ARCHITECTURES.values()),
    )
    p.add_argument("--epochs", type=at_least(1), help="default: the preset's")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stroke_helpers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model")
    _training_args(t)
    t.add_argument("--no-attention", action="store_true", help="plain skip connections")
    t.add_argument("--no-multilevel", action="store_true", help="full-resolution loss only")
    c = sub.add_parser("cascade", help="train stage 1, make the synthetic maps, train stage 2")
    _training_args(c)
    c.add_argument("--folds", type=folds, default=0, help="out-of-fold Ms with this many folds (0: in-sample)")
    e = sub.add_parser("evaluate", help="score a run per study; writes RUN/metrics.json")
    e.add_argument("--run", required=True)
    e.add_argument("--split", default="val", choices=["val", "train", "test"])
    e.add_argument("--device", default="auto")
    p = sub.add_parser("predict", help="segment one study folder")
    p.add_argument("--run", required=True)
    p.add_argument("--study", required=True, help="a case_N folder")
    p.add_argument("--out", required=True, help="output .nii.gz")
    p.add_argument("--probabilities", action="store_true", help="write probabilities instead of a mask")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--device", default="auto")
    b = sub.add_parser("baseline", help="score the classical rCBF < 30 %% core against OT per study")
    b.add_argument("data", type=Path, help="ISLES-layout folder")
    b.add_argument("--split", default="TRAINING", choices=["TRAINING", "TESTING"])
    b.add_argument("--out", type=Path, help="also write the per-study rows and the summary to this JSON file")
    r = sub.add_parser("reproduce", help="the main job: data, the experiment grid, cascades, notebooks, report")
    r.add_argument("--preset", default="cpu", choices=list(PRESETS))
    r.add_argument(
        "--data", help="ISLES-layout folder; generated when it has no TRAINING/ (default: DATA/<preset's dataset>)"
    )
    r.add_argument("--out", help="results folder (default: $STROKE_RESULTS, else results/PRESET)")
    r.add_argument("--seed", type=at_least(0), default=0)
    r.add_argument("--seeds", type=at_least(1), help="seeds of the All row and the cascades (default: the preset's)")
    r.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="fp32: what a CPU without bf16 units runs"
    )
    r.add_argument("--skip-notebooks", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("ship", help="write the small shipped checkpoint (MR+ATT All and its cascade) from a cpu run")
    s.add_argument("--results", help="a reproduce results folder (default: $STROKE_RESULTS, else results/cpu)")
    s.add_argument("--data", help="the dataset its runs were trained on (default: the one they name)")
    s.add_argument("--out", help="default: the checkout's checkpoints/cpu")
    s.add_argument("--force", action="store_true", help="replace --out")
    s.add_argument("--no-progress", action="store_true")
    x = sub.add_parser("explore", help="serve the classroom explorer app (Voila) on 127.0.0.1")
    x.add_argument("--data", help="ISLES-layout folder (default: DATA/synthetic)")
    x.add_argument("--run", help="a trained run or cascade folder: adds its prediction, attention and Ms")
    x.add_argument("--port", type=int, default=8866)
    x.add_argument("--no-browser", action="store_true", help="do not open a browser")
    return ap


def _config(args, **switches):
    from .runs import TrainConfig

    locations.require_dataset(args.data)
    return TrainConfig(
        data=args.data,
        out=args.out,
        preset=args.preset,
        modalities=args.modalities,
        architecture=args.architecture,
        epochs=args.epochs,
        seed=args.seed,
        precision=args.precision,
        device=args.device,
        progress=not args.no_progress,
        **switches,
    )


def reproduce(args) -> None:
    import json
    import os
    import time

    from .download import DownloadError, fetch_arterial_atlas
    from .grid import Grid
    from .notebooks import run_notebooks
    from .phantom import PhantomConfig, generate_dataset
    from .presets import get_preset
    from .report import end_to_end, grid_overheads, write_report
    from .runs import ResultsFolder

    t0, seconds = time.perf_counter(), {}
    preset = get_preset(args.preset)
    data, results = locations.dataset(preset.dataset, args.data), locations.results(args.preset, args.out)
    if not (data / "TRAINING").is_dir():
        print(f"generating the synthetic dataset in {data}", flush=True)
        atlas = locations.atlas()
        try:  # fetched once, like nilearn's atlases; offline, geometric territories (warned)
            fetch_arterial_atlas(atlas, progressbar=not args.no_progress)
        except DownloadError as exc:
            print(f"warning: no arterial territory atlas ({exc})", file=sys.stderr)
        config = PhantomConfig(atlas=str(atlas))
        workers = os.cpu_count() or 1
        generate_dataset(data, *preset.cases, args.seed, config, workers=workers, progress=not args.no_progress)
        seconds["dataset"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    grid_seconds = Grid(data, results, preset, args.seed, not args.no_progress, args.seeds, args.precision).run_all()
    seconds["experiment grid and cascades"] = time.perf_counter() - t1
    if not args.skip_notebooks:
        t2 = time.perf_counter()
        params = {"preset": args.preset, "data": str(data.resolve()), "results": str(results.resolve())}
        run_notebooks(results, params)
        seconds["notebooks"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    wall = sum(grid_seconds.values())
    timing = {
        "seconds": seconds,
        "grid_seconds": grid_seconds,
        "overheads": grid_overheads(results, wall),
        "end_to_end": end_to_end(results, data, preset.size, wall),
    }
    ResultsFolder(results).timing.write_text(json.dumps(timing, indent=1))
    figures = sorted(ResultsFolder(results).figures.glob("*.png"))
    print(f"report: {write_report(results, data, preset, seconds, figures, grid_seconds)}")


def run(args) -> None:
    if args.command == "train":
        from .train import train

        switches = {
            "attention": False if args.no_attention else None,  # None: the architecture's
            "multilevel": False if args.no_multilevel else None,
        }
        train(_config(args, **switches), resume=args.resume)
    elif args.command == "cascade":
        from .cascade import run_cascade

        run_cascade(_config(args), folds=args.folds, resume=args.resume)
    elif args.command == "evaluate":
        from .inference import evaluate, format_metrics

        print(format_metrics(evaluate(args.run, args.split, args.device)))
    elif args.command == "predict":
        from .inference import predict_study

        print(predict_study(args.run, args.study, args.out, args.probabilities, args.device, overwrite=args.force))
    elif args.command == "baseline":
        from .baseline import report_baseline

        report_baseline(args.data, args.split, args.out)
    elif args.command == "reproduce":
        reproduce(args)
    elif args.command == "ship":
        from .shipped import ship

        print(
            ship(
                locations.results("cpu", args.results),
                args.out or locations.shipped_checkpoint(),
                args.data,
                args.force,
                not args.no_progress,
            )
        )
    elif args.command == "explore":
        from .explorer import serve

        if serve(args.data, args.run, args.port, open_browser=not args.no_browser):
            raise RuntimeError("voila stopped with an error (see above)")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .isles import IslesError
    from .runs import RunError

    try:
        run(args)
    except (IslesError, RunError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
