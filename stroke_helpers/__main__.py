"""Command line: ``python -m stroke_helpers {train,cascade,evaluate,predict,baseline,realism,difficulty,reproduce,replicate,ship,readme,explore} ...``.

The same functions the notebooks call. Bad arguments and bad input print one line starting
with ``error:`` and exit with status 2; ``--help`` on any command lists its options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import locations
from .architectures import ARCHITECTURES, DEFAULT
from .arguments import at_least, folds, port
from .engine import PRECISIONS
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
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    _run_args(p)


#: ``--precision`` in a few words (the policy: :mod:`stroke_helpers.engine`).
PRECISION_HELP = (
    "auto: bf16 where the hardware computes it (CUDA capability >= 8.0, CPUs with AVX512-BF16 or AMX), "
    "fp16 with a gradient scaler on older CUDA GPUs, fp32 elsewhere"
)


def _run_args(p: argparse.ArgumentParser) -> None:
    """How runs train and checkpoint (``train``, ``cascade`` and every run of ``reproduce``)."""
    p.add_argument("--keep-last", action="store_true", help="keep last.pt when a run finishes (to extend it later)")
    p.add_argument(
        "--checkpoint-every", type=at_least(1), default=10, help="write last.pt every N epochs (default 10) ..."
    )
    p.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, help="... or every M minutes (default 10), whichever first"
    )
    p.add_argument(
        "--deterministic", action="store_true", help="CUDA: bitwise reproducible kernels (CPU runs always are)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--lr-policy",
        default="keep",
        choices=["keep", "linear"],
        help="under torchrun: keep the preset's lr (default) or scale it by the world size",
    )


def _run_options(args) -> dict:
    """The :class:`~stroke_helpers.runs.TrainConfig` fields :func:`_run_args` sets."""
    if not args.checkpoint_minutes > 0:
        raise ValueError(f"--checkpoint-minutes must be above 0, not {args.checkpoint_minutes}")
    return {
        "keep_last": args.keep_last,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_minutes": args.checkpoint_minutes,
        "deterministic": args.deterministic,
        "compile": args.compile,
        "lr_policy": args.lr_policy,
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stroke_helpers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model")
    _training_args(t)
    t.add_argument("--no-attention", action="store_true", help="plain skip connections")
    t.add_argument("--no-multilevel", action="store_true", help="full-resolution loss only")
    t.add_argument("--force", action="store_true", help="replace the run in --out (its own files only)")
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
    b.add_argument("--force", action="store_true", help="overwrite --out")
    m = sub.add_parser("realism", help="the realism scorecard: each map's information against real-data ranges")
    m.add_argument("data", type=Path, help="ISLES-layout folder (the phantom's or real ISLES 2018)")
    m.add_argument("--split", default="TRAINING", choices=["TRAINING", "TESTING"])
    m.add_argument("--out", type=Path, help="CSV file (default: DATA/truth/scorecard.csv when DATA has a truth folder)")
    m.add_argument("--force", action="store_true", help="overwrite --out")
    m.add_argument("--no-progress", action="store_true")
    d = sub.add_parser(
        "difficulty", help="how hard each map is to learn: cross-validated single-map base models on TRAINING"
    )
    d.add_argument("data", type=Path, help="ISLES-layout folder")
    d.add_argument("--out", type=Path, required=True, help="folder for the fold runs (a scored fold is kept)")
    d.add_argument("--folds", type=at_least(2), default=5)
    d.add_argument("--preset", default="cpu", choices=list(PRESETS))
    d.add_argument("--table", type=Path, help="also write the table to this CSV file")
    d.add_argument("--force", action="store_true", help="overwrite --table")
    d.add_argument("--no-progress", action="store_true")
    r = sub.add_parser("reproduce", help="the main job: data, the experiment grid, cascades, notebooks, report")
    r.add_argument("--preset", default="cpu", choices=list(PRESETS))
    r.add_argument(
        "--data", help="ISLES-layout folder; generated when it has no TRAINING/ (default: DATA/<preset's dataset>)"
    )
    r.add_argument("--out", help="results folder (default: $STROKE_RESULTS, else results/PRESET)")
    r.add_argument("--seed", type=at_least(0), default=0)
    r.add_argument("--seeds", type=at_least(1), help="seeds of the All row and the cascades (default: the preset's)")
    r.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP + "; fp32: what a CPU without bf16 runs"
    )
    r.add_argument("--skip-notebooks", action="store_true")
    r.add_argument(
        "--rescore-thresholds",
        action="store_true",
        help="score the classical threshold baselines again (kept when already scored on the same studies)",
    )
    r.add_argument("--no-progress", action="store_true")
    _run_args(r)
    q = sub.add_parser(
        "replicate", help="score the grid's single-map and All models on a draw of new TESTING studies from the phantom"
    )
    q.add_argument("--results", help="a reproduce results folder (default: $STROKE_RESULTS, else results/cpu)")
    q.add_argument("--draw", help="the draw's folder (default: beside the grid's dataset, <dataset>_replication)")
    q.add_argument("--seed", type=at_least(0), help="the draw's seed (default: the dataset's + 1)")
    q.add_argument("--cases", type=at_least(1), help="TESTING studies to draw (default: twice the dataset's)")
    q.add_argument("--force", action="store_true", help="score again, and replace a draw of another seed or size")
    q.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("ship", help="write the small shipped checkpoint (MR+ATT All and its cascade) from a cpu run")
    s.add_argument("--results", help="a reproduce results folder (default: $STROKE_RESULTS, else results/cpu)")
    s.add_argument("--data", help="the dataset its runs were trained on (default: the one they name)")
    s.add_argument("--out", help="default: the checkout's checkpoints/cpu")
    s.add_argument("--force", action="store_true", help="replace --out")
    s.add_argument("--no-progress", action="store_true")
    w = sub.add_parser("readme", help="render README's results blocks from a results folder or the shipped checkpoint")
    w.add_argument("--results", help="a reproduce results folder or a shipped checkpoint (default: checkpoints/cpu)")
    w.add_argument("--readme", help="the README to write between its markers (default: the checkout's README.md)")
    w.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff when README differs")
    x = sub.add_parser("explore", help="serve the classroom explorer app (Voila) on 127.0.0.1")
    x.add_argument("--data", help="ISLES-layout folder (default: DATA/synthetic)")
    x.add_argument("--run", help="a trained run or cascade folder: adds its prediction, attention and Ms")
    x.add_argument("--port", type=port, default=8866, help="1-65535")
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
        **_run_options(args),
        **switches,
    )


def _device(name: str):
    """The torch device ``--device`` names; one this machine does not have is refused in one line."""
    import torch

    from .engine import resolve_device

    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, mps ...)") from None
    if device.type == "cpu":
        return device
    found = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if found is None or found.type != device.type:
        has = f"its accelerator is {found.type}" if found is not None else "PyTorch finds only the CPU"
        raise ValueError(f"--device {name}: this machine has no {device.type} device ({has}); use --device auto or cpu")
    count = torch.accelerator.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"--device {name}: this machine has {count} {device.type} device(s), numbered from 0")
    return device


def computes(device, precision: str) -> bool:
    """Whether ``device`` can autocast to ``precision`` (``bf16``, ``fp16``) at all, natively or
    emulated (:func:`~stroke_helpers.engine.choose_precision` says which): a tiny matmul tries it."""
    import warnings

    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unsupported dtype warns and disables autocast
            with torch.autocast(device.type, dtype):
                x = torch.ones(2, 2, device=device)
                return (x @ x).dtype == dtype
    except (RuntimeError, TypeError, ValueError, AssertionError):
        return False


def _precision(precision: str, device) -> None:
    if precision in ("bf16", "fp16") and not computes(device, precision):
        raise ValueError(
            f"--precision {precision}: {device} cannot compute {precision} on this machine; "
            "use --precision auto (the fastest this machine has) or fp32"
        )


def _training_data(args) -> None:
    """What ``train`` and ``cascade`` need of the data: every ``--modalities`` file in every
    training case, every case fit to train on (:func:`~stroke_helpers.isles.check_cases`), a
    readable ``patients.csv``, and for ``--folds`` that many training patients."""
    from types import SimpleNamespace

    from .cascade import patient_groups
    from .isles import IslesError, check_cases, discover_cases, find_case_files, read_patients
    from .modalities import canonical_modalities
    from .runs import split_names

    data = locations.require_dataset(args.data)
    wanted = canonical_modalities(args.modalities)
    cases = discover_cases(data, "TRAINING")
    files = {c: find_case_files(c) for c in cases}
    for m in wanted:
        lacking = [c for c in cases if m not in files[c]]
        if lacking:
            more = f" and {len(lacking) - 1} more case(s)" if len(lacking) > 1 else ""
            raise IslesError(
                f"--modalities {args.modalities}: TRAINING/{lacking[0].name}{more} of {data} "
                f"{'have' if more else 'has'} no {m} file"
            )
    check_cases(cases)  # every study, as training will check it, before the run starts
    patients = read_patients(data)
    if args.command == "cascade" and args.folds:
        names = [f"TRAINING/{c.name}" for c in cases]
        split = SimpleNamespace(studies=names, patients=[patients.get(n) for n in names])
        train, _ = split_names(_config(args), split)  # the split training will make
        n = len(patient_groups(train, patients))
        if args.folds > n:
            raise ValueError(
                f"--folds {args.folds}: {data} leaves {n} training patient(s) beside the validation studies; "
                f"use at most {n} folds (or 0: in-sample)"
            )


def refuse_impossible(args) -> None:
    """Options the data or this machine cannot honour, refused in one line before any work."""
    device = _device(args.device) if getattr(args, "device", None) is not None else None
    if getattr(args, "precision", "auto") not in ("auto", "fp32"):  # reproduce trains on the automatic device
        _precision(args.precision, device or _device("auto"))
    if args.command in ("train", "cascade"):
        _training_data(args)


#: What to do after Ctrl-C, per command (``train`` and ``cascade`` have ``--resume``; the grid
#: of ``reproduce`` skips finished runs and resumes the interrupted one when run again).
AFTER_INTERRUPT = {
    "train": "continue with the same command and --resume",
    "cascade": "continue with the same command and --resume",
    "reproduce": "run the same reproduce command again: it skips what is finished and resumes the interrupted run",
    "ship": "run the same ship command again: it starts over",
    "difficulty": "run the same difficulty command again: it keeps the folds already scored and trains the interrupted one again",
    "replicate": "run the same replicate command again: a finished draw is reused, an unfinished one drawn again",
}


def reproduce(args) -> None:
    import os
    import time

    from .download import DownloadError, fetch_arterial_atlas
    from .engine import barrier, is_main_process, resolve_device, setup_distributed
    from .grid import Grid
    from .notebooks import run_notebooks
    from .phantom import PhantomConfig, generate_dataset
    from .presets import get_preset
    from .report import end_to_end, grid_overheads, machine, write_report
    from .runs import ResultsFolder, check_results_folder, write_json

    t0, seconds = time.perf_counter(), {}
    preset = get_preset(args.preset)
    data, results = locations.dataset(preset.dataset, args.data), locations.results(args.preset, args.out)
    check_results_folder(results)  # new, empty or reproduce's own; never the shipped checkpoint
    setup_distributed(resolve_device("auto"))  # under torchrun: rank 0 makes the data and the report
    if not (data / "TRAINING").is_dir() and is_main_process():
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
    barrier()
    t1 = time.perf_counter()
    grid = Grid(data, results, preset, args.seed, not args.no_progress, args.seeds, args.precision, _run_options(args))
    grid.rescore_thresholds = args.rescore_thresholds  # the classical baselines' scores, kept unless asked
    grid_seconds = grid.run_all()
    seconds["experiment grid and cascades"] = time.perf_counter() - t1
    if not is_main_process():
        return
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
        "machine": machine(resolve_device("auto"), args.precision),  # README's results block names it
    }
    write_json(timing, ResultsFolder(results).timing)
    figures = sorted(ResultsFolder(results).figures.glob("*.png"))
    print(f"report: {write_report(results, data, preset, seconds, figures, grid_seconds)}")


#: Commands every torchrun rank runs (they train); under torchrun the others run on rank 0 only.
DISTRIBUTED_COMMANDS = ("train", "cascade", "reproduce")


def run(args) -> int | None:
    """Run one command; an exit status other than 0 is returned (``readme --check``), errors raise."""
    from .engine import is_main_process

    if args.command not in DISTRIBUTED_COMMANDS and not is_main_process():
        return  # one process scores, predicts and writes; the other ranks have nothing to do
    refuse_impossible(args)
    if args.command == "train":
        from .train import train

        switches = {
            "attention": False if args.no_attention else None,  # None: the architecture's
            "multilevel": False if args.no_multilevel else None,
        }
        train(_config(args, **switches), resume=args.resume, force=args.force)
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

        report_baseline(args.data, args.split, args.out, force=args.force)
    elif args.command == "realism":
        from .scorecard import report_realism

        locations.require_dataset(args.data)
        report_realism(args.data, args.split, args.out, not args.no_progress, args.force)
    elif args.command == "difficulty":
        from .difficulty import report_difficulty

        locations.require_dataset(args.data)
        report_difficulty(args.data, args.out, args.table, args.folds, args.preset, not args.no_progress, args.force)
    elif args.command == "reproduce":
        reproduce(args)
    elif args.command == "replicate":
        from .difficulty import side_by_side
        from .replication import checks_on_test_sets, labelled, replicate

        results = locations.results("cpu", args.results)
        replicate(results, args.draw, args.seed, args.cases, args.force, not args.no_progress)
        print(side_by_side(labelled(checks_on_test_sets(results))))
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
    elif args.command == "readme":
        from .readme import update

        results = Path(args.results) if args.results else locations.shipped_checkpoint()
        readme = Path(args.readme) if args.readme else locations.checkout() / "README.md"
        diff = update(readme, results, check=args.check)
        if args.check and diff:
            print(diff, end="")
            print(
                f"{readme} differs from what `python -m stroke_helpers readme` renders from {results}", file=sys.stderr
            )
            return 1
        print(f"{readme}: {'rendered' if diff else 'up to date'} from {results}")
    elif args.command == "explore":
        from .explorer import serve

        if serve(args.data, args.run, args.port, open_browser=not args.no_browser):
            raise RuntimeError("voila stopped with an error (see above)")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from .isles import IslesError
    from .runs import RunError

    try:
        status = run(args)
    except (IslesError, RunError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = AFTER_INTERRUPT.get(args.command, "nothing to resume: run the same command again")
        if getattr(args, "resume", False) and args.command in ("train", "cascade"):
            hint = "continue with the same command (with --resume)"
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
