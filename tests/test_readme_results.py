"""README's results section and shipped-checkpoint table are rendered from the committed bundle
(:mod:`stroke_helpers.readme`), and their words follow the numbers: no training, no dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stroke_helpers import locations, readme
from stroke_helpers.__main__ import main
from stroke_helpers.baseline import THRESHOLDS
from stroke_helpers.grid import ALL_RUN, MONAI_RUN, TABLE2, run_name
from stroke_helpers.runs import ResultsFolder, TrainConfig, write_history, write_json
from stroke_helpers.shipped import _copy_small_files

ROOT = Path(__file__).resolve().parents[1]
STUDIES = [f"TESTING/case_{i}" for i in range(1, 31)]


def test_readme_blocks_are_rendered_from_the_shipped_checkpoint():
    """If this fails, the bundle or the renderer changed: run `python -m stroke_helpers readme`."""
    text = (ROOT / "README.md").read_text()
    rendered = readme.render(locations.shipped_checkpoint())
    assert set(rendered) == set(readme.BLOCKS)
    for name, content in rendered.items():
        assert readme.block(text, name) == content, f"README's {name} block is stale: python -m stroke_helpers readme"
    results = readme.block(text, "results")
    assert "Synthetic-phantom results, not patients" in results and "| MR+ATT |" in results
    assert "<!-- scorecard:" not in results  # another block, never rendered here


def scores(out: Path, folder: str, dice, split: str = "test", studies=STUDIES) -> None:
    """``folder``'s per-study scores (a run's, or a threshold method's for a name of THRESHOLDS)."""
    results = ResultsFolder(out)
    run = results.threshold(folder) if folder in THRESHOLDS else results.run(folder)
    values = np.broadcast_to(np.asarray(dice, float), (len(studies),))
    rows = [
        {"study": s, **dict.fromkeys(("dice", "precision", "recall", "hd95", "avd"), float(v))}
        for s, v in zip(studies, values)
    ]
    summary = {
        m: {"mean": float(values.mean()), "std": float(values.std()), "n": len(rows)} for m in rows[0] if m != "study"
    }
    run.path.mkdir(parents=True, exist_ok=True)
    write_json({"studies": rows, "summary": summary}, run.metrics(split))


def claim_row(text: str, claim: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {claim} |"))


@pytest.fixture
def spread():
    return np.linspace(0.3, 0.9, len(STUDIES))


def test_the_words_follow_the_numbers(tmp_path, spread):
    """A tiny hand-made results folder: the same sentences say "resolved" or "not", "collapses"
    or not, as the numbers change."""
    scores(tmp_path, run_name("base", TABLE2[-1]), spread)
    scores(tmp_path, run_name("MR", TABLE2[-1]), spread + 0.05)  # a consistent gain: resolved
    noise = np.resize([0.02, -0.02], len(STUDIES))
    scores(tmp_path, ALL_RUN, spread + 0.05 + noise)  # no gain over MR: not resolved
    scores(tmp_path, run_name("MR+ATT", "CT"), 0.0)  # predicts nothing
    scores(tmp_path, run_name("MR+ATT", "CBV"), 0.25)
    text = readme.render_results(tmp_path)
    assert f"Dice on the **{len(STUDIES)} held-out TESTING studies**" in text
    assert claim_row(text, "MR vs base (All)").endswith("| yes: MR All scores higher | +0.01 |")
    assert claim_row(text, "MR+ATT vs MR (All)").endswith("| no | +0.00 |")
    assert "resolves 1 of the 2 architectural claims (resolved: 0.05 Dice; unresolved: 0.00 Dice or less)" in " ".join(
        text.split()
    )
    flat = " ".join(text.split())
    assert "MR+ATT NCCT (0.00) collapses: mean Dice below 0.05" in flat and "No run collapses" not in flat
    assert "a run with a perfusion map among its inputs is 0.25 (MR+ATT CBV)" in flat
    assert "Synthetic-phantom" not in flat  # no phantom settings here: not labelled as the phantom's
    assert "no scores of the no-learning NCCT hypodensity baseline" in flat
    assert "Time." not in flat and "trainings reached their plateau" not in flat  # no learning curves here

    # the numbers change, and the words with them
    scores(tmp_path, run_name("MR", TABLE2[-1]), spread + noise)
    scores(tmp_path, run_name("MR+ATT", "CT"), 0.2)
    scores(tmp_path, ALL_RUN, spread - 0.05)
    text = readme.render_results(tmp_path)
    flat = " ".join(text.split())
    assert claim_row(text, "MR vs base (All)").endswith("| no | +0.01 |")
    assert claim_row(text, "MR+ATT vs MR (All)").endswith("| yes: MR All scores higher | +0.00 |")
    assert "No run collapses (mean Dice below 0.05 on the held-out TESTING studies)" in flat
    assert "collapses:" not in flat
    for line in text.splitlines():  # wrapped prose never starts a list, a quote or a table by accident
        assert len(line) <= readme.WIDTH or line.startswith(("|", "<!--")) or " " not in line
        assert not line.startswith(("+ ", "- ", "* ", "> ")) and not line.split(" ")[0].rstrip(".)").isdigit()


def test_baselines_monai_timing_and_curves_when_the_source_has_them(tmp_path, spread):
    """What the next grid's bundle holds: threshold scores, MONAI's run, timing.json, learning
    curves and configurations; each shows in the block."""
    for row, shift in (("base", 0.0), ("MR", 0.0), ("MR+ATT", 0.02)):
        scores(tmp_path, run_name(row, TABLE2[-1]), spread + shift)
        scores(tmp_path, run_name(row, TABLE2[-1]), spread + shift, split="val")
        scores(tmp_path, run_name(row, "CT"), spread * 0.1)
    scores(tmp_path, MONAI_RUN, spread - 0.01)
    scores(tmp_path, MONAI_RUN, spread - 0.01, split="val")
    for method, shift in (("ncct_hypodensity", -0.25), ("rcbf_below_30", -0.3), ("tmax_above_6s", -0.1)):
        for split in ("test", "val"):
            scores(
                tmp_path,
                method,
                np.clip(spread + shift, 0, 1) if method != "ncct_hypodensity" else spread * 0.1 + 0.02,
                split,
            )
    run = ResultsFolder(tmp_path).run(ALL_RUN)
    write_json(TrainConfig(data=str(tmp_path / "no-data"), out=str(run.path), preset="cpu").to_dict(), run.config)
    curve = [0.2, 0.5, 0.6, 0.61, 0.6]
    write_history(
        [
            {"epoch": i + 1, "train_loss": 0.1, "val_dice": d, "seconds": 10.0, "val_seconds": 1.0}
            for i, d in enumerate(curve)
        ],
        run.history,
    )
    timing = {
        "seconds": {"experiment grid and cascades": 70.0, "notebooks": 40.0, "total": 120.0},
        "grid_seconds": {ALL_RUN: 60.0, "thresholds": 10.0},
        "overheads": {"training steps": 45.0, "per-epoch validation": 5.0, "everything else": 20.0, "grid wall": 70.0},
        "end_to_end": {"training_slices": 700, "grid_wall_s": 70.0, "slices_per_s": 10.0},
        "machine": {"device": "A test CPU", "cores": 2, "precision": "bf16", "why": "test"},
    }
    write_json(timing, ResultsFolder(tmp_path).timing)

    text = readme.render_results(tmp_path)
    flat = " ".join(text.split())
    assert "| threshold (no learning) | 0.08 [" in text and "| MONAI AttentionUnet | - | - | - | - | " in text
    assert "(`cpu` preset: widths" in flat and "on an existing dataset" in flat
    assert (
        "`python -m stroke_helpers reproduce` on A test CPU (2 cores, bf16): 1.2 min for the grid of 1 training (1 table run)"
        in flat
    )
    assert "64 % training steps, 7 % per-epoch validation, 29 % everything else" in flat
    assert "1 of 1 trainings reached their plateau" in flat
    assert claim_row(text, "MR+ATT vs MONAI AttentionUnet (All)").endswith("| yes: MR+ATT All scores higher | - |")
    best = claim_row(text, "best network (MR+ATT All) vs best threshold (Tmax > 6 s)")
    assert best.endswith("| yes: MR+ATT All scores higher | - |")
    assert "The best network against the best threshold method, paired: +0.120; this sample resolves it" in flat
    assert "the networks against the baselines" in flat
    assert "the no-learning hypodensity baseline (darker than the mirror image across the midline) scores" in flat
    assert "worse than the best learned NCCT model" not in flat  # 0.1 x + 0.02 against 0.1 x: better, resolved
    assert "better than the best learned NCCT model" in flat


def test_the_command_writes_only_between_the_markers(tmp_path, spread, capsys):
    scores(tmp_path / "results", ALL_RUN, spread)
    page = tmp_path / "README.md"
    before, between, after = "# Title\n\nHand-written.\n\n", "stale text", "\n\n## Next\n\nHand-written too.\n"
    page.write_text(f"{before}<!-- results:begin -->{between}<!-- results:end -->{after}")
    command = ["readme", "--results", str(tmp_path / "results"), "--readme", str(page)]
    assert main([*command, "--check"]) == 1
    out = capsys.readouterr()
    assert "\n-<!-- results:begin -->stale text" in out.out and "differs from what" in out.err
    assert page.read_text().count("stale text") == 1  # --check writes nothing
    assert main(command) == 0
    text = page.read_text()
    assert text.startswith(before + "<!-- results:begin -->\n") and text.endswith("<!-- results:end -->" + after)
    assert readme.block(text, "results") == readme.render_results(tmp_path / "results")
    assert main([*command, "--check"]) == 0 and "up to date" in capsys.readouterr().out
    page.write_text("no markers")
    assert main(command) == 2 and "<!-- results:begin -->" in capsys.readouterr().err


def test_ship_copies_the_timing_record(tmp_path):
    results, out = tmp_path / "results", tmp_path / "out"
    run = ResultsFolder(results).run(ALL_RUN)
    run.path.mkdir(parents=True)
    write_json({}, run.config)
    (run.path / "best.pt").write_bytes(b"weights")
    write_json({"seconds": {"total": 1.0}}, ResultsFolder(results).timing)
    _copy_small_files(results, out)
    assert json.loads(ResultsFolder(out).timing.read_text()) == {"seconds": {"total": 1.0}}
    assert (
        ResultsFolder(out).run(ALL_RUN).config.is_file()
        and not (ResultsFolder(out).run(ALL_RUN).path / "best.pt").exists()
    )


def test_nothing_to_render_is_refused_and_readme_left_alone(tmp_path, capsys):
    page = tmp_path / "README.md"
    page.write_text("<!-- results:begin -->kept<!-- results:end -->\n")
    assert main(["readme", "--results", str(tmp_path / "empty"), "--readme", str(page)]) == 2
    assert "no evaluated MR+ATT_All run" in capsys.readouterr().err and "kept" in page.read_text()
