"""Recovery of a known answer: how well a run finds what a simulated study planted.

A study of real data has no known answer; the generated demo has one (its ground truth: a planted subgroup of one
cohort, the regions it changed and the behaviour scores tied to them). The refresh takes a :class:`PlantedTruth`
as an optional argument (the demo builds one with :func:`analysis.demo.truth.planted_truth`) and reports against it:
the planted subgroup as its own detection group, the cohort prototype's precision and recall of the subgroup, and
the hypothesis chain's recall of the planted regions and behaviour pairs
(:func:`analysis.exploration.cohort_analysis.planted_recovery`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlantedTruth:
    """What a simulated study planted."""

    cohort: str
    """The cohort holding the planted subgroup."""
    subgroup: tuple[str, ...]
    """Subject ids of the planted subgroup."""
    regions: dict[str, list[str]]
    """Region group -> atlas ROIs the subgroup's anomaly was planted in."""
    behaviour_pairs: list[dict]
    """Planted (region group, behaviour score) associations: keys ``region_group``, ``regions``, ``score``,
    ``direction`` (the score's change with the regional severity)."""


def with_planted_groups(groups: dict[str, list[str]], truth: PlantedTruth | None) -> dict[str, list[str]]:
    """``groups`` (detection group -> subject ids) plus the planted subgroup and the rest of its cohort."""
    groups = dict(groups)
    members = groups.get(truth.cohort, []) if truth is not None else []
    if truth is not None and truth.subgroup and members:
        planted = set(truth.subgroup)
        groups[f"{truth.cohort} (planted subgroup)"] = [i for i in members if i in planted]
        groups[f"{truth.cohort} (rest)"] = [i for i in members if i not in planted]
    return groups


def prototype_recovery(prototypes: dict[str, dict], truth: PlantedTruth | None) -> dict | None:
    """How well the planted cohort's maximal prototype holds the planted subgroup: sizes, precision and recall;
    None without a known answer (or when the cohort has no prototype)."""
    if truth is None or truth.cohort not in prototypes or not truth.subgroup:
        return None
    found, planted = set(prototypes[truth.cohort]["members"]), set(truth.subgroup)
    return {
        "cohort": truth.cohort,
        "planted": len(planted),
        "prototype_size": len(found),
        "precision": len(found & planted) / len(found),
        "recall": len(found & planted) / len(planted),
    }
