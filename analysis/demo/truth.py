"""The demo's known answer, read from the ground truth the generator writes beside the cohort.

This is the only way demo knowledge reaches the refresh: the command line builds a
:class:`~analysis.exploration.recovery.PlantedTruth` here and hands it to :func:`pipeline.refresh.refresh`.
"""

from __future__ import annotations

import json

from analysis.exploration.recovery import PlantedTruth
from analysis.study.manifest import Manifest

GROUND_TRUTH_FILE = "ground_truth.json"


def planted_truth(manifest: Manifest) -> PlantedTruth | None:
    """The generated demo's planted subgroup, regions and behaviour pairs; None for a study of real data (no
    ``demo:`` block) or a demo folder without ground truth."""
    if manifest.demo is None:
        return None
    path = manifest.resolve(manifest.demo.folder) / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    truth = json.loads(path.read_text())
    return PlantedTruth(
        cohort=truth.get("planted_cohort", ""),
        subgroup=tuple(truth.get("planted_subgroup", [])),
        regions=truth.get("planted_regions", {}),
        behaviour_pairs=truth.get("planted_behaviour_pairs", []),
    )
