"""Helpers for the stroke lesion segmentation tutorial.

One job per module, in the order data flows through them:

- :mod:`stroke_helpers.modalities` what each modality is: one table (token, dtype, units, normalisation, display)
- :mod:`stroke_helpers.isles`      the ISLES 2018 layout on disk: discover, load, write, verify
- :mod:`stroke_helpers.locations`  where everything lives: argument, then environment variable, then default
- :mod:`stroke_helpers.files`      atomic writes that say what went wrong, folder locks, swaps, the --force rule
- :mod:`stroke_helpers.download`   fetch and unpack archives safely
- :mod:`stroke_helpers.isles24`    convert a local ISLES 2024 copy (BIDS) into the ISLES 2018 layout
- :mod:`stroke_helpers.perfusion`  indicator dilution, SVD deconvolution, perfusion maps, classical thresholds
- :mod:`stroke_helpers.phantom`    the digital perfusion phantom (the synthetic ISLES-layout dataset)
- :mod:`stroke_helpers.truth`      the phantom's truth folder, read: true maps, case table, TESTING masks
- :mod:`stroke_helpers.realism`    how real a CT looks: brain HU percentiles beside a real CT and a template
- :mod:`stroke_helpers.scorecard`  how much information each map carries, against published real-data ranges
- :mod:`stroke_helpers.baseline`   no-learning baselines: the rCBF < 30 % core, NCCT hypodensity
- :mod:`stroke_helpers.datasets`   normalisation, brain mask, resizing both ways, cached 2D slices, splits
- :mod:`stroke_helpers.augment`    the paper's augmentations, batched: one composed warp of image and mask per slice
- :mod:`stroke_helpers.model`      the cross-attention autoencoder with multilevel refinement heads
- :mod:`stroke_helpers.architectures` the models a run can train, by name (the paper's; MONAI's AttentionUnet)
- :mod:`stroke_helpers.loss`       class-weight maps and the multilevel refinement loss
- :mod:`stroke_helpers.metrics`    per-study Dice, precision, recall, HD95, AVD; threshold sweeps
- :mod:`stroke_helpers.presets`    the ``paper``, ``cpu`` and ``smoke`` settings (and the smoke dataset)
- :mod:`stroke_helpers.engine`     device, precision, distributed set-up, batched forward passes, seeds
- :mod:`stroke_helpers.runs`       a run's configuration, and the run and results folders' layouts (one accessor each)
- :mod:`stroke_helpers.train`      the training loop
- :mod:`stroke_helpers.cascade`    stage 1, the synthetic map ``Ms``, stage 2
- :mod:`stroke_helpers.inference`  a trained run applied to studies: predict, evaluate at native resolution
- :mod:`stroke_helpers.grid`       the experiment grid behind Tables 1 and 2, and the two cascades
- :mod:`stroke_helpers.difficulty` how hard each map is to learn: single-map models cross-validated over TRAINING
- :mod:`stroke_helpers.replication` the grid's models scored on a draw of new TESTING studies from the phantom
- :mod:`stroke_helpers.shipped`    the small trained ``cpu`` checkpoint the chapters read when the grid has not run
- :mod:`stroke_helpers.report`     every results table, built once from the runs' metrics
- :mod:`stroke_helpers.readme`     README's generated blocks: its results section, rendered from a results folder
- :mod:`stroke_helpers.chapters`   what each chapter computes, and which data and results it reads
- :mod:`stroke_helpers.notebooks`  the chapters executed with papermill and published with their outputs
- :mod:`stroke_helpers.answers`    the exercises' answer checks, computed from data, truth and results
- :mod:`stroke_helpers.figures`    pure figure functions (arrays in, a matplotlib Figure out)
- :mod:`stroke_helpers.widgets`    interactive viewers that own their widgets and draw with :mod:`figures`
- :mod:`stroke_helpers.arguments`  argument types of the command lines: numbers a command can use
- :mod:`stroke_helpers.explorer`   the classroom explorer app (widgets in tabs), served with Voila

``python -m stroke_helpers`` is the command line (train, cascade, evaluate, predict, baseline,
realism, difficulty, reproduce, replicate, ship, readme, explore); ``data_download.py`` at the repository's top gets the data.
"""

__version__ = "0.1.0"
