"""The dataset: patients planned in the ISLES 2018 proportions, simulated in parallel, written
through :func:`stroke_helpers.isles.write_case` (the loader cannot tell them from the real
archives) and, for what only a phantom knows, through :mod:`.truth`.

Slabs: ISLES 2018 training has 94 cases from 63 patients, slab sizes 2 (51 cases), 4 (19), 8 (9),
16 (13) and 22 (2) slices; :func:`slab_sizes` and :func:`plan_split` keep exactly these
proportions. Kill safety: the dataset is built in ``OUT.partial`` and moved into place at the
end; workers die with their parent (``PR_SET_PDEATHSIG``), and the next run removes a partial
folder and says it starts again from scratch.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import files, locations
from ..isles import PATIENTS_FILE, SPLITS, write_case
from ..modalities import id_order
from ..truth import CASES_FILE, CONFIG_FILE, TRUTH, has_truth
from . import territories as atlas_territories
from . import truth as truth_io
from .series import PhantomConfig, simulate_patient

#: ISLES 2018 training slab sizes: slices -> number of cases (docs/decisions.md §5).
ISLES_SLICES = {2: 51, 4: 19, 8: 9, 16: 13, 22: 2}


#: Raised whenever a change to the generator changes the data a seed gives; recorded in
#: ``truth/config.csv``, so a model trained on one version is never taken for another's.
PHANTOM_VERSION = 6


def slab_sizes(rng, n_cases: int) -> list[int]:
    """Slice counts for ``n_cases`` slabs in the ISLES proportions (exactly ISLES's 502 for 94)."""
    total = sum(ISLES_SLICES.values())
    quotas = {k: n_cases * v / total for k, v in ISLES_SLICES.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: quotas[k] - counts[k], reverse=True)[: n_cases - sum(counts.values())]:
        counts[k] += 1
    sizes = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(sizes)
    return sizes


def plan_split(rng, n_cases: int) -> list[list[int]]:
    """Group ``n_cases`` slabs into patients: about a third of the cases share a patient
    (ISLES: 63 training patients -> 94 cases). A two-slab patient's slabs have equal size, drawn
    in pairs from the ISLES slab-size multiset so the split keeps its slice distribution."""
    pool = Counter(slab_sizes(rng, n_cases))
    patients = []
    for _ in range(n_cases - int(round(n_cases * 63 / 94))):
        pairable = [k for k in sorted(pool) if pool[k] >= 2]
        if not pairable:
            break
        weights = np.array([pool[k] for k in pairable], float)
        k = pairable[rng.choice(len(pairable), p=weights / weights.sum())]
        pool[k] -= 2
        patients.append([k, k])
    patients += [[k] for k in sorted(pool) for _ in range(pool[k])]
    return [patients[i] for i in rng.permutation(len(patients))]


def _simulate_and_write(args):
    seed, slabs, config, out, split, first_case, patient, ids = args
    rows = []
    for k, res in enumerate(simulate_patient(seed, slabs, config)):
        case = first_case + k
        if split == "TESTING":  # no mask in the test split: keep it hidden in the truth folder
            res["truth"]["ot"] = res["volumes"].pop("OT")
        write_case(
            out / split, case, res["volumes"], res["spacing"], ids[k], config.frame_step, compress=config.compress
        )
        truth_io.write_case_truth(out, f"{split}/case_{case}", res["truth"], res["spacing"])
        rows.append({"split": split, "case": f"case_{case}", "patient": patient} | res["row"])
    return rows


def _die_with_parent() -> None:
    """Pool initializer: on Linux, the kernel kills this worker when its parent dies (even by
    SIGKILL), so an interrupted generation never leaves workers writing files."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool is still terminated on any exception
        pass


def _run_jobs(jobs: list, workers: int):
    """Each job's rows as it finishes; in ``workers`` spawned processes when more than one. On
    any exception, Ctrl-C included, the workers are terminated before it propagates."""
    if workers <= 1:
        yield from map(_simulate_and_write, jobs)
        return
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in threads}
    os.environ.update({k: "1" for k in threads})  # one thread per worker, inherited at spawn
    try:
        pool = get_context("spawn").Pool(workers, initializer=_die_with_parent)
    finally:
        for k, value in saved.items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value
    try:
        yield from pool.imap_unordered(_simulate_and_write, jobs)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _plan_jobs(rng, seed: int, config: PhantomConfig, tmp: Path, train_cases: int, test_cases: int) -> list:
    """One job per patient: (seed, slab sizes, config, folder, split, first case, patient, ids)."""
    jobs = []
    for split_index, (split, n) in enumerate((("TRAINING", train_cases), ("TESTING", test_cases))):
        if n <= 0:
            continue
        case = 1
        for p, slabs in enumerate(plan_split(rng, n)):
            ids = []
            for _ in slabs:
                if split == "TRAINING":  # consecutive ids: 4DPWI = n, CT = n + 1, ...
                    base = int(rng.integers(100000, 999000))
                    ids.append({t: base + i for i, t in enumerate(id_order())})
                else:
                    ids.append({t: int(rng.integers(100000, 999999)) for t in id_order() if t != "OT"})
            patient = f"{'train' if split == 'TRAINING' else 'test'}_{p + 1:03d}"
            jobs.append((seed * 1_000_003 + split_index * 10_007 + p, slabs, config, tmp, split, case, patient, ids))
            case += len(slabs)
    return jobs


def _write_tables(tmp: Path, rows: list[dict], config: PhantomConfig, settings: dict) -> None:
    rows.sort(key=lambda r: (r["split"], int(r["case"].split("_")[1])))
    columns = ["split", "case", "patient"]
    files.write_csv(tmp / PATIENTS_FILE, columns, [{k: r[k] for k in columns} for r in rows], durable=False)
    truth_io.write_tables(tmp, rows, asdict(config) | settings)


def not_written_here(out: Path) -> str:
    """Why ``out`` is not a dataset this generator wrote ('' when it is one, which ``force``
    may replace): the phantom writes ``TRAINING/case_N``, ``TESTING/case_N``, ``truth/`` with its
    tables and the patients file, and the loader adds its slice cache; anything else is someone's."""
    if not out.is_dir():
        return "a file, not a folder"
    if not has_truth(out):
        kind = "an ISLES dataset" if (out / "TRAINING").is_dir() else "a folder"
        return f"{kind} without the phantom's {TRUTH}/{CASES_FILE} and {TRUTH}/{CONFIG_FILE}"
    ours = {*SPLITS, TRUTH, PATIENTS_FILE, locations.CACHE_NAME}
    foreign = [p.name for p in out.iterdir() if p.name not in ours]
    for split in SPLITS:
        if (out / split).is_dir():
            foreign += [f"{split}/{p.name}" for p in (out / split).iterdir() if not re.fullmatch(r"case_\d+", p.name)]
    return f"it also holds {', '.join(sorted(foreign)[:5])}" if foreign else ""


def generate_dataset(
    out: str | os.PathLike,
    train_cases: int = 94,
    test_cases: int = 62,
    seed: int = 0,
    config: PhantomConfig | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write the synthetic ISLES-layout dataset to ``out`` and return it.

    An existing dataset in ``out`` is kept (error) unless ``force``, and ``force`` replaces only
    a dataset this generator wrote (:func:`not_written_here`): any other folder is refused, so
    nothing of anyone's is lost. The dataset is built in a temporary sibling folder
    (``OUT.partial``) and swapped into place at the end (:func:`stroke_helpers.files.swap_in`),
    so an interrupted run leaves nothing half-written in ``out``; its workers die with it (even
    on SIGKILL, on Linux), and the next run removes the partial folder and says that it starts
    again. One generator writes ``out`` at a time (:func:`stroke_helpers.files.lock`); a full
    disk is one line, and the partial folder is removed then. ``config.atlas`` names the arterial
    territory atlas folder; without one, geometric territories are used with a printed warning,
    and ``truth/config.csv`` records which.
    """
    out = Path(out)
    config = config or PhantomConfig()
    with files.lock(out, f"generate the synthetic dataset {out}"):
        files.recover(out)
        files.check_replaceable(out, force, not_written_here, "a synthetic dataset written by data_download.py")
        tmp = files.partial(out)
        try:
            _generate(tmp, train_cases, test_cases, seed, config, workers, progress)
        except files.NoSpaceError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise files.NoSpaceError(f"{exc} (the partial dataset {tmp} was removed)") from None
        return files.swap_in(tmp, out)


def _generate(
    tmp: Path, train_cases: int, test_cases: int, seed: int, config: PhantomConfig, workers: int | None, progress: bool
) -> None:
    tmp.mkdir(parents=True)
    atlas = atlas_territories.find_atlas(config.atlas, warn=True)  # warns once here, not in every worker
    rng = np.random.default_rng(seed)
    jobs = _plan_jobs(rng, seed, config, tmp, train_cases, test_cases)
    jobs.sort(key=lambda job: -sum(job[1]))  # most slices first, so the workers finish together
    workers = workers or min(os.cpu_count() or 1, 8)
    rows = []
    for batch in tqdm(_run_jobs(jobs, workers), total=len(jobs), desc="phantom patients", disable=not progress):
        rows += batch
    settings = {"phantom_version": PHANTOM_VERSION, "seed": seed, "train_cases": train_cases, "test_cases": test_cases}
    settings |= atlas_territories.record(atlas is not None)
    _write_tables(tmp, rows, config, settings)
