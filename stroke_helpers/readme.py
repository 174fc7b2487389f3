"""README's generated blocks: every number its results section states, rendered from a results folder.

    python -m stroke_helpers readme [--results checkpoints/cpu] [--readme README.md] [--check]

README holds two blocks between markers (:data:`BLOCKS`): ``results`` (the section "Results on
the synthetic dataset": the tables, the baselines, the cascades, the paired claims and the prose
whose numbers and words come from them) and ``shipped`` (the shipped checkpoint's halved models
against the grid's). Both are rendered here from a results source, by default the shipped
checkpoint ``checkpoints/cpu`` (which holds every grid run's per-study scores and learning
curves, the threshold scores and the grid's ``timing.json``), or a grid's results folder. The
command writes only between the markers; ``--check`` writes nothing and exits 1 with a diff
when README differs; ``tests/test_readme_results.py`` checks README against the committed bundle.

Every statistic comes from :mod:`stroke_helpers.report` (cells, comparisons, seeds,
convergence, time); this module only chooses the words, and the words that depend on the
results ("resolved", "helps", "collapses", "leak") are chosen from the numbers here, so a new
grid run cannot leave a sentence that its numbers contradict.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

import numpy as np

from . import files, locations
from .baseline import THRESHOLDS
from .difficulty import side_by_side
from .grid import ALL_RUN, ARCHITECTURE_ROWS, CASCADES, EXTRA_RUNS, MONAI_RUN, ROWS, TABLE1, TABLE2, run_name
from .presets import get_preset
from .replication import checks_on_test_sets, labelled
from .report import (
    PAPER_CASCADE,
    PAPER_TABLE1,
    PAPER_TABLE2,
    PLATEAU,
    SPLIT_NAMES,
    THRESHOLD_COLUMNS,
    cell,
    comparisons,
    convergence,
    display_name,
    grid_overheads,
    has_split,
    ncct_comparison,
    per_study,
    seed_spread,
    table_markdown,
    trained_runs,
)
from .runs import ResultsFolder, RunError, load_config, read_cascade, read_history, read_json
from .shipped import data_settings, is_shipped, manifest, recorded_leakage

BLOCKS = ("results", "shipped")
COMMAND = "python -m stroke_helpers readme"
#: A run whose mean Dice is below this predicts (almost) nothing: it has collapsed.
COLLAPSE = 0.05
#: In-sample maps leak when they score this much more on the training slices than on the reference.
LEAK_MARGIN = 0.05
#: Best validation Dice below this: a run that barely learns.
BARELY = 0.2
#: The classical rCBF < 30 % core on real ISLES 2018 (94 training cases; docs/decisions.md §5).
RCBF_ISLES2018 = 0.29


#: README's prose is wrapped at this many characters.
WIDTH = 100
#: A word that, first on a line, would make it a list item, a heading, a quote, a table row or an underline.
_STARTS_BLOCK = re.compile(r"^(\d{1,9}[.)]|[-+*]|#{1,6}|>.*|\|.*|=+|-+)$")


def wrap(paragraph: str) -> str:
    """A paragraph of prose wrapped at :data:`WIDTH`, never with a line that Markdown would read as
    a list item, a quote, a heading or a table row (such a word stays on the line before it);
    tables and comments are left as they are."""
    if paragraph.startswith(("|", "<!--")):
        return paragraph
    lines: list[str] = []
    for word in paragraph.split():
        if lines and (len(lines[-1]) + 1 + len(word) <= WIDTH or _STARTS_BLOCK.match(word)):
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def paragraphs(blocks) -> str:
    """The non-empty blocks, each wrapped (:func:`wrap`), a blank line between them."""
    return "\n\n".join(wrap(b) for b in blocks if b)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def _mean(values: dict[str, float] | None) -> float:
    v = np.array(list(values.values()) if values else [], float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def _range(values, digits: int = 3) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}–{hi:.{digits}f}"


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _config(results: Path):
    try:
        return load_config(ResultsFolder(results).run(ALL_RUN))
    except RunError:
        return None


def _settings(results: Path, config) -> dict | None:
    """The phantom's settings the runs were trained on: recorded in a shipped checkpoint, else
    read from the dataset the runs name (None where it is not a phantom, or not here)."""
    described = manifest(results) if is_shipped(results) else None
    if described:
        return described["data_settings"]
    if config is not None and Path(config.data).is_dir():
        return data_settings(config.data)
    return None


def _timing(results: Path) -> dict | None:
    path = ResultsFolder(results).timing
    return read_json(path, "the grid's timing record") if path.is_file() else None


# --- the results block --------------------------------------------------------------------------


def intro(results: Path, split: str) -> str:
    config, source = _config(results), _source(results)
    settings = _settings(results, config)
    if settings is not None:
        data = (
            f"the digital phantom (v{settings.get('phantom_version', '?')}: {settings.get('train_cases', '?')} + "
            f"{settings.get('test_cases', '?')} studies, seed {settings.get('seed', '?')}, "
            f"{settings.get('territories', '?')} territories)"
        )
        lead = "**Synthetic-phantom results, not patients.**"
        scope = (
            "They show what the code does and what a sample of this size can resolve, not how the method fares "
            "clinically."
        )
    else:
        data = f"`{config.data}`" if config else "the data its runs name"
        lead, scope = "**Results.**", ""
    preset = ""
    if config is not None:
        p = config.settings
        preset = f" (`{p.name}` preset: widths {p.widths}, {p.size} px, {config.n_epochs} epochs)"
    rcbf = per_study(results, THRESHOLD_COLUMNS["CBF"], split=split)
    calibration = (
        f" On the {SPLIT_NAMES[split]} below, the classical rCBF < 30 % core scores Dice {cell(rcbf)} against the "
        f"phantom's expert masks ({RCBF_ISLES2018:.2f} on real ISLES 2018's training cases)."
        if rcbf and settings is not None
        else ""
    )
    paper = get_preset("paper")
    return (
        f"{lead} Every number and verdict in this block is rendered by `{COMMAND}` from the {source}{preset}, "
        f"trained and scored on {data}.{calibration} {scope} The paper's numbers (real ISLES 2018, 19 validation "
        f"studies, {paper.epochs} epochs at {paper.size} px) are in brackets as mean ± std."
    ).replace("  ", " ")


def shown(path: str | Path) -> str:
    """``path`` as README names it: relative to the checkout when inside it, however it was given."""
    try:
        return Path(path).resolve().relative_to(locations.checkout().resolve()).as_posix()
    except (ValueError, locations.NotACheckoutError):
        return Path(path).as_posix()


def _source(results: Path) -> str:
    kind = "shipped checkpoint" if is_shipped(results) else "grid results folder"
    return f"{kind} `{shown(results)}`"


def training_kinds(results: Path) -> dict[tuple[str, str], int]:
    """How many trainings of each kind the grid ran (each once: :func:`~stroke_helpers.report.trained_runs`),
    by kind ``(singular, plural)``."""
    table = {run_name(r, c) for r in ROWS for c in (*TABLE1, *TABLE2)}
    extra = {run_name(r, c): (f"{ARCHITECTURE_ROWS[r]} run", f"{ARCHITECTURE_ROWS[r]} runs") for r, c in EXTRA_RUNS}
    kinds: dict[tuple[str, str], int] = {}
    for run in trained_runs(results):
        name = ResultsFolder(results).name(run)
        if name in table:
            kind = ("table run", "table runs")
        elif name in extra:
            kind = extra[name]
        elif "/fold_" in name:
            kind = ("fold model", "fold models")
        elif name.endswith("/stage2"):
            kind = ("cascade's second stage", "cascades' second stages")
        else:
            kind = ("seed run of the All row", "seed runs of the All row")
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def time_paragraph(results: Path) -> str:
    """Where the time went: from the grid's ``timing.json`` when the source has one, else what
    the runs' learning curves record (training steps and validation, per run)."""
    kinds = training_kinds(results)
    n = sum(kinds.values())
    if not n:
        return ""
    breakdown = ", ".join(_count(v, *k) for k, v in kinds.items())
    trainings = _count(n, "training", "trainings")
    per_run = [sum(r["seconds"] for r in read_history(run)) for run in trained_runs(results)]
    epochs = sorted({len(read_history(run)) for run in trained_runs(results)})
    timing = _timing(results)
    runs = (
        f"One training ({'/'.join(map(str, epochs))} epochs, with its per-epoch validation) took "
        f"{_range(per_run, 0)} s (median {np.median(per_run):.0f} s)"
    )
    if timing is None:
        parts = grid_overheads(results, 0.0)
        return (
            f"**Time.** This source holds no timing record (`timing.json`, which `reproduce` writes and `ship` "
            f"copies), so only what the learning curves record is shown: {trainings} ({breakdown}) spent "
            f"{parts['training steps'] / 60:.1f} min in training steps and {parts['per-epoch validation'] / 60:.1f} min "
            f"in per-epoch validation. {runs}."
        )
    seconds, parts, speed = timing["seconds"], timing["overheads"], timing["end_to_end"]
    wall = parts["grid wall"]
    where = timing.get("machine")
    on = f" on {where['device']} ({where['cores']} cores, {where['precision']})" if where else ""
    dataset = (
        f"generating the dataset took {seconds['dataset']:.0f} s" if "dataset" in seconds else "on an existing dataset"
    )
    notebooks = f" and the five notebooks ({seconds['notebooks']:.0f} s)" if "notebooks" in seconds else ""
    if parts["everything else"] < 0:  # a resumed grid: its runs' histories hold more than this session's wall
        return (
            f"**Time.** `python -m stroke_helpers reproduce`{on} was resumed: its last session took {wall / 60:.1f} min "
            f"and finished the grid of {trainings} ({breakdown}){notebooks}, {dataset}. The runs' learning curves "
            f"record {parts['training steps'] / 60:.1f} min of training steps and "
            f"{parts['per-epoch validation'] / 60:.1f} min of per-epoch validation, more than that session's wall "
            f"time (runs trained before the resume count too), so no shares of the wall time are given. {runs}."
        )
    shares = ", ".join(
        f"{100 * parts[k] / wall:.0f} % {k}" for k in ("training steps", "per-epoch validation", "everything else")
    )
    return (
        f"**Time.** `python -m stroke_helpers reproduce`{on}: {wall / 60:.1f} min for the grid of {trainings} "
        f"({breakdown}){notebooks}, {dataset}; {seconds['total'] / 60:.1f} min in all. Of the grid's wall time "
        f"{shares} (model start, slice cache, synthetic maps, native-resolution evaluation, HD95): "
        f"{speed['slices_per_s']:.0f} training slices per second of wall time end to end. {runs}."
    )


def ncct_sentence(results: Path, split: str) -> str:
    c = ncct_comparison(results, None, split)
    if c is None:
        return (
            "CT alone: this source holds no scores of the no-learning NCCT hypodensity baseline (the grid scores "
            "it with the thresholds), so the learned NCCT models above have no baseline beside them here."
        )
    learned = _list([f"{row} {cell(v)}" for row, v in c["learned"].items()])
    p = c["paired"]
    if p["resolved"]:
        compare = "better than" if p["mean"] > 0 else "worse than"
    else:
        compare = "as well as (not resolved from)"
    collapsed = [row for row, v in c["learned"].items() if _mean(v) < COLLAPSE]
    nothing = f" ({_list(collapsed)} predicts nothing there)" if collapsed else ""
    weak = (
        "at this training budget, learning from CT alone does not beat a threshold (the hypodensity is a few HU)"
        if not p["resolved"] or p["mean"] > 0
        else ""
    )
    return (
        f"CT alone: the no-learning hypodensity baseline (darker than the mirror image across the midline) scores "
        f"{cell(c['baseline'])} on the same studies, {compare} the best learned NCCT model ({c['best']}: "
        f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}], paired); the learned ones score {learned}{nothing}"
        + (f": {weak}." if weak else ".")
    )


def difficulty_paragraphs(results: Path) -> tuple[str, str]:
    """The learned-difficulty targets checked on the test sets (:func:`checks_on_test_sets`): a
    paragraph saying what the columns are and which targets they miss, and the table; ``("", "")``
    when ``results`` holds no TESTING scores of the single-map runs."""
    tables = checks_on_test_sets(results)
    if not tables:
        return "", ""
    record = tables.get("draw")
    draw = (
        f" and a draw of {record['cases']} more TESTING studies from the same phantom with another seed "
        f"({record['seed']}; made and scored by `python -m stroke_helpers replicate`), which shows what another "
        "sample of studies changes"
        if record is not None
        else " (no draw here: `python -m stroke_helpers replicate` makes and scores one)"
    )
    misses = []
    for key, table in tables.items():
        failed = [
            f"{r['quantity'].removesuffix(' Dice')} ({r['value']:.3f})" for r in table["rows"] if r["passed"] is False
        ]
        misses.append(f"on {'TESTING' if key == 'TESTING' else 'the draw'}, {_list(failed) if failed else 'none'}")
    text = (
        "**Learned difficulty on the test sets.** The learned-difficulty targets (cross-validated on TRAINING in "
        f"the phantom section above) checked on studies no model saw: the TESTING split{draw}. Each study's Dice "
        f"is the mean of its base, MR and MR+ATT models' (one seed each). Targets missed: {'; '.join(misses)}."
    )
    if any(r["quantity"] == "MTT Dice" and r["passed"] is False for t in tables.values() for r in t["rows"]):
        text += " Why MTT misses: its measured value is squeezed (docs/decisions.md §6, item 8)."
    return text, side_by_side(labelled(tables))


def cascade_sentence(results: Path, split: str) -> str:
    stage1 = per_study(results, ALL_RUN, split=split)
    if stage1 is None:
        return ""
    parts = [f"stage 1 alone {cell(stage1)}, precision {cell(per_study(results, ALL_RUN, 'precision', split))}"]
    for folder in CASCADES:
        run = ResultsFolder(results).run(folder)
        values = per_study(results, folder, split=split)
        if values is None or not run.is_cascade:
            continue
        folds = read_cascade(run.path)["folds"]
        kind = f"out-of-fold (K = {folds})" if folds else "with in-sample synthetic maps"
        parts.append(f"cascade {kind} {cell(values)}, precision {cell(per_study(results, folder, 'precision', split))}")
    return (
        f"Cascade on `All` ({SPLIT_NAMES[split]}): {'; '.join(parts)} (the paper's cascade, on real ISLES 2018: "
        f"Dice {PAPER_CASCADE['dice']:.2f}, precision {PAPER_CASCADE['precision']:.2f})."
    )


def _cells() -> dict[str, tuple[str, int, dict]]:
    """``{run: (row, column index, paper table)}`` for every cell of the paper's tables."""
    return {
        run_name(row, c): (row, i, paper)
        for table, paper in ((TABLE1, PAPER_TABLE1), (TABLE2, PAPER_TABLE2))
        for row in ROWS
        for i, c in enumerate(table)
    }


def paper_difference(c: dict) -> float | None:
    """The paper's difference of means for a claim whose runs are both cells of its tables."""
    cells = _cells()
    if c["a"] not in cells or c["b"] not in cells:
        return None
    (ra, ia, pa), (rb, ib, pb) = cells[c["a"]], cells[c["b"]]
    return pa[ra][ia][0] - pb[rb][ib][0]


def kind(c: dict) -> str:
    """``inputs`` (the same configuration on other inputs), ``architecture`` (the same inputs,
    another configuration, network or the cascade) or ``baseline`` (a network against a threshold)."""
    if c["b"] in THRESHOLDS or c["a"] in THRESHOLDS:
        return "baseline"
    cells = _cells()
    if c["a"] in cells and c["b"] in cells and cells[c["a"]][0] == cells[c["b"]][0]:
        return "inputs"
    return "architecture"


def resolved_word(c: dict) -> str:
    if not c["resolved"]:
        return "no"
    return f"yes: {display_name(c['a'] if c['mean'] > 0 else c['b'])} scores higher"


def claims_table(claims: list[dict]) -> str:
    lines = [
        "| claim (a vs b) | difference [95 % CI] | studies | resolved by this sample? | the paper's means, a − b |",
        "|---|---|---|---|---|",
    ]
    for c in claims:
        paper = paper_difference(c)
        lines.append(
            f"| {c['claim']} | {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['n']} | {resolved_word(c)} | "
            f"{'-' if paper is None else f'{paper:+.2f}'} |"
        )
    return "\n".join(lines)


def resolution_paragraph(claims: list[dict]) -> str:
    """What this sample resolves, by kind of claim; then the paper's own differences."""
    groups = {k: [c for c in claims if kind(c) == k] for k in ("inputs", "architecture", "baseline")}
    sentences = []
    for k, label in (("inputs", "differences between inputs"), ("architecture", "architectural claims")):
        group = groups[k]
        if not group:
            continue
        yes = [abs(c["mean"]) for c in group if c["resolved"]]
        no = [abs(c["mean"]) for c in group if not c["resolved"]]
        sizes = ([f"resolved: {_range(yes, 2)} Dice"] if yes else []) + (
            [f"{'unresolved: ' if yes else 'effects of '}{max(no):.2f} Dice or less"] if no else []
        )
        count = "all" if not no else "none" if not yes else f"{len(yes)}"
        sentences.append(f"{count} of the {len(group)} {label} ({'; '.join(sizes)})")
    text = f"This sample resolves {' and '.join(sentences)}." if sentences else ""
    for c in groups["baseline"]:
        verdict = (
            f"resolves it: {display_name(c['a'] if c['mean'] > 0 else c['b'])} scores higher"
            if c["resolved"]
            else "does not resolve it"
        )
        text += f" The best network against the best threshold method, paired: {c['mean']:+.3f}; this sample {verdict}."
    paper = [d for c in claims if (d := paper_difference(c)) is not None]
    if paper:
        text += (
            f" The paper's tables give means and standard deviations, not paired differences: its differences of "
            f"means for the same claims ({_range([abs(d) for d in paper], 2)} Dice) come without an interval, so its "
            "tables cannot say whether its 19 studies resolve them (a standard deviation between studies is not the "
            "uncertainty of a paired difference)."
        )
    return text.strip()


def seeds_sentence(results: Path, split: str, claims: list[dict]) -> str:
    config = _config(results)
    spread = seed_spread(results, config.seed if config else 0, split)
    rows = [max(m) - min(m) for label, m in spread.items() if label in ROWS and len(m) > 1]
    cascades = [max(m) - min(m) for label, m in spread.items() if label in CASCADES and len(m) > 1]
    if not rows:
        return ""
    seeds = max(len(m) for m in spread.values())
    text = f"Over {seeds} seeds the All row's mean Dice varies by {_range(rows)}"
    text += f" and the cascades' by {_range(cascades)}" if cascades else ""
    gain = next((c for c in claims if c["claim"] == "MR vs base (All)"), None)
    if gain is not None:
        relation = (
            "as much as or more than" if round(max(rows + cascades), 3) >= round(abs(gain["mean"]), 3) else "less than"
        )  # as printed
        text += f": {relation} MR's difference from base ({gain['mean']:+.3f})"
    return text + "."


def collapse_sentence(results: Path, split: str) -> str:
    runs = {run_name(r, c): c for r in ROWS for c in (*TABLE1, *TABLE2)} | {run_name(r, c): c for r, c in EXTRA_RUNS}
    means = {name: m for name in runs if not math.isnan(m := _mean(per_study(results, name, split=split)))}
    if not means:
        return ""
    collapsed = sorted((n for n, m in means.items() if m < COLLAPSE), key=means.get)
    perfusion = {n: m for n, m in means.items() if runs[n] != "CT"}
    low = min(perfusion, key=perfusion.get) if perfusion else None
    lowest = (
        f"the lowest mean Dice of a run with a perfusion map among its inputs is {means[low]:.2f} ({display_name(low)})"
        if low
        else ""
    )
    if not collapsed:
        return f"No run collapses (mean Dice below {COLLAPSE} on the {SPLIT_NAMES[split]}); {lowest}."
    named = _list([f"{display_name(n)} ({means[n]:.2f})" for n in collapsed])
    verb = "collapses" if len(collapsed) == 1 else "collapse"
    return (
        f"{named} {verb}: mean Dice below {COLLAPSE} on the {SPLIT_NAMES[split]}, predicting (almost) nothing; "
        f"{lowest}."
    )


def convergence_sentence(results: Path) -> str:
    rows = convergence(results)
    if not rows:
        return ""
    flat = [r for r in rows if r["plateau"]]
    text = (
        f"{len(flat)} of {len(rows)} trainings reached their plateau (last three epochs within {PLATEAU} of their best)"
    )
    others = [r for r in rows if not r["plateau"]]
    if not others:
        return text + "."

    def ct_only(name: str) -> bool:
        try:
            return load_config(ResultsFolder(results).run(name)).modalities == ("CT",)
        except RunError:
            return False

    ct = [r for r in others if ct_only(r["run"])]
    rest = [r for r in others if r not in ct]
    parts = []
    if ct:
        barely = all(r["best"] < BARELY for r in ct)
        parts.append(
            f"{len(ct)} CT-only run{'s' if len(ct) > 1 else ''}"
            + (
                f", which barely learn (best validation Dice at most {max(r['best'] for r in ct):.2f})"
                if barely
                else ""
            )
        )
    if rest:
        short = [r["best"] - r["last3"] for r in rest]
        val = [v for v in (per_study(results, ALL_RUN) or {}).values() if np.isfinite(v)]
        where = (
            f", where one of the {len(val)} validation studies found or missed moves the mean by up to "
            f"{1 / len(val):.2f}"
            if val
            else ""
        )
        names = _list([f"`{r['run']}`" for r in rest])
        plural = "s" if len(rest) > 1 else ""
        parts.append(f"{len(rest)} run{plural} {_range(short, 2)} short of a best epoch{where} ({names})")
    text += f"; the other {len(others)}: {_list(parts)}"
    return text + "."


def leakage(results: Path) -> dict[str, dict[str, float]]:
    """``{cascade: {"training": Dice, "validation": Dice}}`` of ``Ms > 0.5``: recorded in a shipped
    checkpoint, else measured from the grid's saved maps when its dataset is here."""
    recorded = recorded_leakage(results)
    if recorded:
        return recorded
    config = _config(results)
    if config is None or not Path(config.data).is_dir():
        return {}
    from .cascade import ms_leak
    from .datasets import build_slices

    arrays = build_slices(config.data, "TRAINING", config.settings.size, progress=False)
    leak = {}
    for folder in CASCADES:
        try:
            leak[folder] = ms_leak(ResultsFolder(results).run(folder).path, arrays)
        except RunError:
            continue
    return leak


def leak_sentence(results: Path) -> str:
    leak = leakage(results)
    if "cascade" not in leak:
        return ""
    train, ref = leak["cascade"]["training"], leak["cascade"]["validation"]
    verdict = (
        f"leak: on the training slices they score {train - ref:.2f} above"
        if train - ref > LEAK_MARGIN
        else f"do not leak: on the training slices they score within {LEAK_MARGIN} of"
    )
    oof = f"; out-of-fold maps {leak['cascade_oof']['training']:.2f}" if "cascade_oof" in leak else ""
    return (
        f"At this budget the in-sample synthetic maps {verdict} the validation reference (Dice of `Ms > 0.5`: "
        f"{train:.2f} against {ref:.2f}{oof})."
    )


def render_results(results: str | Path) -> str:
    """The whole results block of README, as Markdown, from ``results`` (a grid's results folder or
    a shipped checkpoint)."""
    results = Path(results)
    split = "test" if has_split(results, "test") else "val"
    if not has_split(results, split):
        raise RunError(
            f"{results}: no evaluated {ALL_RUN} run, so nothing to render (pass --results a grid's results folder "
            "or a shipped checkpoint)"
        )
    n = len(per_study(results, ALL_RUN, split=split))
    never = (
        "never used for training or model selection"
        if split == "test"
        else "also used to pick each run's best epoch: no held-out truth here"
    )
    claims = comparisons(results, split)
    others = [c for c in claims if kind(c) == "baseline" or MONAI_RUN in (c["a"], c["b"])]
    beside = ", and the networks against the baselines," if others else ""
    prose = " ".join(
        s
        for s in (
            seeds_sentence(results, split, claims),
            collapse_sentence(results, split),
            convergence_sentence(results),
            leak_sentence(results),
        )
        if s
    )
    report = f"`{shown(results)}/report.md`" if not is_shipped(results) else "a grid run's `results/cpu/report.md`"
    blocks = [
        f"<!-- Rendered by `{COMMAND}` from the {_source(results)}: edit stroke_helpers/readme.py, not this block. -->",
        intro(results, split),
        time_paragraph(results),
        f"Dice on the **{n} {SPLIT_NAMES[split]}** ({never}), mean [95 % bootstrap interval], the paper's mean ± std "
        "in brackets:",
        table_markdown(results, TABLE1, PAPER_TABLE1, split=split),
        table_markdown(results, TABLE2, PAPER_TABLE2, split=split),
        ncct_sentence(results, split),
        *difficulty_paragraphs(results),
        cascade_sentence(results, split),
        f"The paper's claims{beside} as paired per-study differences on the same {n} studies (a − b, mean "
        "[95 % CI]; forest plot in notebook 05):",
        claims_table(claims),
        resolution_paragraph(claims),
        prose,
        f"Full tables (validation and test, precision, HD95, AVD, thresholds, seeds, convergence, time per run): "
        f"{report} and notebook 05.",
    ]
    return paragraphs(blocks)


# --- the shipped block --------------------------------------------------------------------------


def render_shipped(results: str | Path) -> str | None:
    """The shipped checkpoint's halved models against the grid's, from its ``shipped.json``;
    None when ``results`` is not a shipped checkpoint."""
    described = manifest(results) if is_shipped(results) else None
    if described is None:
        return None
    scores = described.get("mean_dice", {})
    columns = list(dict.fromkeys(k for row in scores.values() for k in row))
    lines = ["| model, split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, row in scores.items():
        name, split = key.rsplit(" ", 1)
        label = "{} `{}`".format(*name.split("_", 1)) if "_" in name else name  # MR+ATT_All: MR+ATT `All`
        cells = " | ".join(f"{row[c]:.4f}" if c in row else "-" for c in columns)
        lines.append(f"| {label}, {'validation' if split == 'val' else split} | {cells} |")
    gaps = [abs(r["grid (fp32 weights)"] - r["shipped (fp16)"]) for r in scores.values()]
    evaluated = described.get("evaluated_in", "fp32")
    agree = (
        f"matches the fp32 grid models' to within {max(gaps):.4f}"
        if max(gaps) <= 0.001
        else f"differs from the fp32 grid models' by up to {max(gaps):.4f}"
    )
    comment = f"<!-- Rendered by `{COMMAND}` from shipped.json: edit stroke_helpers/readme.py, not this block. -->"
    head = f"Under {evaluated}, as the machine that shipped them evaluates them, their mean Dice {agree}:"
    if "shipped, evaluated in fp32" in columns:
        tail = "The last column is what a CPU without bf16 units computes."
    elif evaluated != "fp32":
        tail = (
            "This bundle records no fp32 evaluation of the halved models (what a CPU without bf16 units computes); "
            "`ship` records one in every bundle it makes now."
        )
    else:
        tail = ""
    return paragraphs((comment, head, "\n".join(lines), tail))


def render(results: str | Path) -> dict[str, str]:
    """``{block: markdown}`` for every block ``results`` can render (:data:`BLOCKS`)."""
    blocks = {"results": render_results(results)}
    shipped = render_shipped(results)
    if shipped is not None:
        blocks["shipped"] = shipped
    return blocks


def block(text: str, name: str) -> str:
    """What README holds between the markers of ``name`` (stripped); a missing marker is an error."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"README must hold {begin} and then {end}, once each")
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """``text`` with each block's markers enclosing its new content; nothing outside them changes."""
    for name, content in blocks.items():
        block(text, name)  # both markers, once, in order
        begin, end = markers(name)
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{content}\n{end}{tail}"
    return text


def update(readme: str | Path, results: str | Path, check: bool = False) -> str:
    """Render the blocks from ``results`` into ``readme`` (unless ``check``); returns the diff
    between README as it is and as rendered ('' when it is up to date)."""
    readme = Path(readme)
    old = readme.read_text()
    new = replace_blocks(old, render(results))
    diff = "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{readme} (as it is)", f"{readme} (rendered)")
    )
    if diff and not check:
        files.write_text(readme, new)
    return diff
