"""Who is in the demo study and what each subject carries: the planted regions and the cohort plan.

The cohorts imitate the Down-syndrome case study of the method documents (dissertation ch. 6.3) and the lesion study
(ch. 5.4):

- ``typical``: the reference cohort (train/val/test), typically developing school-age children;
- ``down_syndrome``: 28 subjects, all with a smaller brain; a planted subgroup of 16 (12 female) shares one
  regional phenotype (cerebellum, hippocampus, temporal gyri), the other 12 carry heterogeneous regional changes;
- ``autism``, ``atypical``, ``high_risk_typical``: weaker or different phenotypes;
- ``typical_lesion``: held-out typical subjects with simulated white-matter lesions and ground-truth masks.

Everything is deterministic for ``DemoConfig.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.demo.config import DemoConfig

PLANTED_REGIONS = {
    "cerebellum": (
        "Cerebelum_Crus1_L",
        "Cerebelum_Crus1_R",
        "Cerebelum_Crus2_L",
        "Cerebelum_Crus2_R",
        "Cerebelum_6_L",
        "Cerebelum_6_R",
    ),
    "hippocampus": ("Hippocampus_L", "Hippocampus_R"),
    "temporal": (
        "Temporal_Sup_L",
        "Temporal_Sup_R",
        "Temporal_Mid_L",
        "Temporal_Mid_R",
        "Temporal_Inf_L",
        "Temporal_Inf_R",
    ),
}
"""The Down-syndrome-like subgroup's phenotype, grouped so each group drives one behaviour score."""

AUTISM_REGIONS = (
    "Frontal_Sup_L",
    "Frontal_Sup_R",
    "Frontal_Mid_L",
    "Frontal_Mid_R",
    "Amygdala_L",
    "Amygdala_R",
    "Cingulum_Ant_L",
    "Cingulum_Ant_R",
)
ATYPICAL_REGIONS = ("Caudate_L", "Caudate_R", "Putamen_L", "Putamen_R", "Thalamus_L", "Thalamus_R")
HETEROGENEOUS_POOL = (
    "Precentral_L",
    "Precentral_R",
    "Frontal_Inf_Tri_L",
    "Frontal_Inf_Tri_R",
    "Insula_L",
    "Insula_R",
    "Cingulum_Post_L",
    "Cingulum_Post_R",
    "Calcarine_L",
    "Calcarine_R",
    "Lingual_L",
    "Lingual_R",
    "Parietal_Sup_L",
    "Parietal_Sup_R",
    "Precuneus_L",
    "Precuneus_R",
    "Postcentral_L",
    "Postcentral_R",
    "Occipital_Mid_L",
    "Occipital_Mid_R",
    "Frontal_Sup_Medial_L",
    "Frontal_Sup_Medial_R",
)
"""Regions for the heterogeneous Down-syndrome-like subjects: away from the planted ones."""

REFERENCE = "typical"
CLINICAL_COHORTS = ("down_syndrome", "autism", "atypical", "high_risk_typical")
LESION_COHORT = "typical_lesion"


@dataclass
class Phenotype:
    """Regional changes of one subject: region name -> (volume change, intensity change), plus brain volume."""

    label: str
    regions: dict[str, tuple[float, float]] = field(default_factory=dict)
    brain_volume_change: float = 0.0
    severity: dict[str, float] = field(default_factory=dict)


@dataclass
class SubjectPlan:
    """One planned subject: who it is (sex 'F' or 'M', age in years), what it carries, and the seed it is drawn with.

    ``lesion_intensity`` is the lesion intensity factor of a lesion-cohort subject (``None`` for the others);
    ``seed`` is set by :func:`plan_cohort` so each subject's simulation is independent of the others'.
    """

    subject_id: str
    cohort: str
    split: str
    sex: str
    age: float
    phenotype: Phenotype
    lesion_intensity: float | None = None
    seed: int = 0


def plan_cohort(config: DemoConfig) -> list[SubjectPlan]:
    """Who is in the demo study and what each subject carries; deterministic for ``config.seed``."""
    rng = np.random.default_rng([config.seed, 1])
    s, eff = config.sizes, config.effects
    plans: list[SubjectPlan] = []

    def add(prefix: str, cohort: str, split: str, n: int, female: np.ndarray, make) -> None:
        start = sum(p.cohort == cohort for p in plans)
        for i in range(n):
            plans.append(
                SubjectPlan(
                    subject_id=f"sub-{prefix}{start + i + 1:04d}",
                    cohort=cohort,
                    split=split,
                    sex="F" if female[i] else "M",
                    age=round(float(rng.uniform(8.0, 12.0)), 1),
                    phenotype=make(i),
                )
            )

    def typical(_i):
        return Phenotype("typical")

    for split, n in (("train", s.reference_train), ("val", s.reference_val), ("test", s.reference_test)):
        add("TYP", REFERENCE, split, n, rng.random(n) < 0.5, typical)

    # Down-syndrome-like: shuffle so that ids do not reveal the subgroup.
    in_subgroup = np.zeros(s.down_syndrome, dtype=bool)
    in_subgroup[: s.down_syndrome_subgroup] = True
    female = np.zeros(s.down_syndrome, dtype=bool)
    female[: s.subgroup_female] = True
    rest = s.down_syndrome - s.down_syndrome_subgroup
    female[s.down_syndrome_subgroup :] = np.arange(rest) < rest // 2
    order = rng.permutation(s.down_syndrome)
    in_subgroup, female = in_subgroup[order], female[order]

    def down_syndrome(i):
        if in_subgroup[i]:
            severity = {g: float(rng.uniform(*eff.subgroup_severity_range)) for g in PLANTED_REGIONS}
            regions = {
                name: (eff.subgroup_region_volume_change * sev, eff.subgroup_region_intensity_change * sev)
                for group, sev in severity.items()
                for name in PLANTED_REGIONS[group]
            }
            return Phenotype(
                "down_syndrome_subgroup",
                regions,
                eff.down_syndrome_brain_volume_change + eff.subgroup_brain_volume_change,
                severity,
            )
        names = rng.choice(HETEROGENEOUS_POOL, size=eff.heterogeneous_regions, replace=False)
        regions = {
            str(n): (
                float(rng.choice([-1, 1]) * eff.heterogeneous_volume_change * rng.uniform(0.6, 1.4)),
                float(rng.choice([-1, 1]) * eff.heterogeneous_intensity_change * rng.uniform(0.6, 1.4)),
            )
            for n in names
        }
        return Phenotype("down_syndrome_heterogeneous", regions, eff.down_syndrome_brain_volume_change)

    add("DS", "down_syndrome", "none", s.down_syndrome, female, down_syndrome)

    def graded(label, severity_range, names, volume, intensity, brain):
        """Each member draws one severity in ``severity_range`` that scales every change of the phenotype."""

        def make(_i):
            sev = float(rng.uniform(*severity_range))
            return Phenotype(label, {n: (volume * sev, intensity * sev) for n in names}, brain * sev, {label: sev})

        return make

    # (regions, region volume change, region intensity change, brain volume change) at severity 1. High-risk
    # typical subjects carry a faint version of the autism-like phenotype, so the two cohorts share it.
    autism_like = (
        AUTISM_REGIONS,
        eff.autism_region_volume_change,
        eff.autism_region_intensity_change,
        eff.autism_brain_volume_change,
    )
    atypical_like = (ATYPICAL_REGIONS, eff.atypical_region_volume_change, eff.atypical_region_intensity_change, 0.0)
    for prefix, cohort, n, female_fraction, severity_range, phenotype in (
        ("ASD", "autism", s.autism, 0.2, eff.autism_severity_range, autism_like),
        ("ATY", "atypical", s.atypical, 0.3, eff.atypical_severity_range, atypical_like),
        ("HRT", "high_risk_typical", s.high_risk_typical, 0.4, eff.high_risk_severity_range, autism_like),
    ):
        add(prefix, cohort, "none", n, rng.random(n) < female_fraction, graded(cohort, severity_range, *phenotype))

    first_lesion = len(plans)
    add("LES", LESION_COHORT, "test", s.lesion, rng.random(s.lesion) < 0.5, typical)
    for k, plan in enumerate(plans[first_lesion:]):
        plan.lesion_intensity = float(eff.lesion_intensities[k % len(eff.lesion_intensities)])

    seeds = np.random.SeedSequence([config.seed, 2]).spawn(len(plans))
    for plan, seq in zip(plans, seeds, strict=True):
        plan.seed = int(seq.generate_state(1)[0])
    return plans


def lesion_kind(intensity: float, intensities: tuple[float, ...]) -> str:
    """'faint' for the lowest configured lesion intensity, 'bright' for the highest, else 'x<factor>'."""
    if intensity == min(intensities):
        return "faint"
    if intensity == max(intensities):
        return "bright"
    return f"x{intensity:g}"
