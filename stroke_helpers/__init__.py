"""Helpers for the stroke lesion segmentation tutorial.

One concept per module:

- :mod:`stroke_helpers.isles`     the ISLES 2018 layout on disk: discover, load, write, verify
- :mod:`stroke_helpers.download`  fetch and unpack archives safely, resolve the data folder
- :mod:`stroke_helpers.datasets`  normalisation, brain mask, cached 2D slice datasets, splits
- :mod:`stroke_helpers.perfusion` indicator dilution, SVD deconvolution, perfusion maps, thresholds
- :mod:`stroke_helpers.phantom`   the digital perfusion phantom (synthetic ISLES-layout dataset)
- :mod:`stroke_helpers.figures`   figure-making functions the notebooks show
"""

__version__ = "0.1.0"
