"""Digital perfusion phantom v2: a synthetic ISLES 2018 dataset generated the way real data arise.

One module per step (each documents its model and numbers):

- :mod:`.anatomy`      the MNI152 2009 template (nilearn wheel) posed, deformed and cut into 5 mm
                       CT slices with skull, scalp and background; tissue HU
- :mod:`.territories`  the JHU arterial territory atlas (fetched, CC BY-SA 4.0) or the geometric
                       offline fallback
- :mod:`.ischaemia`    occlusion site, penumbra, core, onset time, NCCT hypodensity, OT
- :mod:`.series`       tissue values, the 4D CTP series, NCCT, maps from the noisy series;
                       :func:`simulate_patient`
- :mod:`.dataset`      ISLES slab plan, parallel generation with kill safety, the ISLES tree
- :mod:`.truth`        writes the ``truth/`` folder beside the dataset (:mod:`stroke_helpers.truth` reads it)
- :mod:`.realism`      phantom vs real CT vs CT template, side by side with HU percentiles

The dataset goes to ``OUT/TRAINING``, ``OUT/TESTING`` through :func:`stroke_helpers.isles.write_case`
(the loader cannot tell it from the real archives), ``OUT/patients.csv`` maps cases to patients,
and ``OUT/truth/`` holds what only a phantom knows.
"""

from .anatomy import HU, SLICE_MM, smooth_field
from .dataset import ISLES_SLICES, generate_dataset, plan_split, slab_sizes
from .series import TISSUE, PhantomConfig, correlated_noise, simulate_patient, tissue_table

__all__ = [
    "HU", "ISLES_SLICES", "SLICE_MM", "TISSUE", "PhantomConfig", "correlated_noise", "generate_dataset",
    "plan_split", "simulate_patient",
    "slab_sizes", "smooth_field", "tissue_table",
]  # fmt: skip
