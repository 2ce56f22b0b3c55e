"""The embedded demo cohort: simulated brain MRIs built from the real MNI152 template and AAL atlas.

Every subject is the template seen through a smooth random deformation of a few mm, scaled globally (brain
volume varying with age and sex), with regional phenotypes (AAL regions shrunk or grown about their centroid and
changed in intensity), a smooth multiplicative bias field, a global intensity scale and noise. The cohorts imitate
the Down-syndrome case study of the method documents (dissertation ch. 6.3) and the lesion study (ch. 5.4):

- ``typical``: the reference cohort (train/val/test), typically developing school-age children;
- ``down_syndrome``: 28 subjects, all with a smaller brain; a planted subgroup of 16 (12 female) shares one
  regional phenotype (cerebellum, hippocampus, temporal gyri), the other 12 carry heterogeneous regional changes;
- ``autism``, ``atypical``, ``high_risk_typical``: weaker or different phenotypes;
- ``typical_lesion``: held-out typical subjects with simulated white-matter lesions and ground-truth masks;

plus a behaviour table of 35 CBCL/Vineland/DAS-like scores for the clinical cohorts in which a few scores track the
planted regional effect, and ``ground_truth.json`` recording what was planted. Everything is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage
from tqdm.auto import tqdm

from analysis.demo.config import (
    GENERATOR_VERSION,
    DemoConfig,
)
from analysis.study.reference_space import ReferenceSpace, SourceVolume
from analysis.study.volumes import atomic_write_bytes, save_volume

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

PLANTED_BEHAVIOUR = (
    ("das_recall_of_designs", "cerebellum", -1),
    ("vineland_socialization", "hippocampus", -1),
    ("cbcl_withdrawn_depressed", "temporal", +1),
)
"""(score, region group, direction): the score moves with that group's regional effect in the subgroup."""

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

BEHAVIOUR_SCORES = {
    "cbcl": (
        "anxious_depressed",
        "withdrawn_depressed",
        "somatic_complaints",
        "social_problems",
        "thought_problems",
        "attention_problems",
        "rule_breaking",
        "aggressive_behavior",
        "internalizing",
        "externalizing",
        "total_problems",
        "affective_problems",
        "anxiety_problems",
    ),
    "vineland": (
        "communication",
        "receptive",
        "expressive",
        "written",
        "daily_living",
        "personal",
        "domestic",
        "community",
        "socialization",
        "interpersonal",
        "play_leisure",
        "coping",
        "composite",
    ),
    "das": (
        "gca",
        "verbal",
        "nonverbal_reasoning",
        "spatial",
        "recall_of_designs",
        "word_definitions",
        "pattern_construction",
        "matrices",
        "recall_of_objects",
    ),
}
# CBCL and DAS report T-scores (mean 50, sd 10); Vineland reports standard scores (mean 100, sd 15).
_SCORE_SCALE = {"cbcl": (50.0, 10.0), "das": (50.0, 10.0), "vineland": (100.0, 15.0)}
SCORE_COLUMNS = tuple(f"{family}_{name}" for family, names in BEHAVIOUR_SCORES.items() for name in names)

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
    subject_id: str
    cohort: str
    split: str
    sex: str
    age: float
    phenotype: Phenotype
    lesion_intensity: float | None = None
    seed: int = 0


@dataclass
class SimulatedSubject:
    """One generated subject. ``warped_labels`` is the AAL atlas carried through the subject's deformation."""

    image: np.ndarray
    warped_labels: np.ndarray
    brain_volume_ml: float
    lesion_mask: np.ndarray | None = None
    lesions: list[dict[str, Any]] = field(default_factory=list)


class DemoSimulator:
    """Draws subjects on a :class:`ReferenceSpace`. Region fields are computed once and reused."""

    FLOW_STEPS = 16
    """Euler steps integrating the regional deformation (its Lipschitz constant times 1/8 stays well below 1)."""

    def __init__(self, space: ReferenceSpace, config: DemoConfig):
        self.space = space
        self.config = config
        self._region_cache: dict[str, tuple[SourceVolume, np.ndarray]] = {}
        self._centre = space.world[space.brain_mask.reshape(-1)].mean(axis=0)

    def region(self, name: str) -> tuple[SourceVolume, np.ndarray]:
        """A region's smooth 0..1 indicator (sampled in template mm) and its centroid (mm), computed once."""
        if name not in self._region_cache:
            self._region_cache[name] = self.space.region_weight(name, self.config.effects.region_smoothing_mm)
        return self._region_cache[name]

    def regional_map(self, u: np.ndarray, phenotype: Phenotype) -> np.ndarray:
        """Map subject points ``u`` (N, 3) to template points through the regional volume changes.

        Each region R gets the velocity field v_R(p) = log(s_R) w_R(p) (p - c_R), with w_R its smooth indicator
        (scaled by s_R about c_R when the region grows), c_R its centroid and s_R = (1 + volume change)^(1/3)
        its linear scale. Flowing template points along the
        summed field for unit time scales each region's interior by s_R about its centroid while the surrounding
        tissue stretches or compresses smoothly, without folding; subject points are mapped back by flowing
        along the negated field (the exact inverse for a stationary field), integrated in small Euler steps.
        """
        regions = [
            (*self.region(name), np.log1p(volume_change) / 3.0)
            for name, (volume_change, _) in phenotype.regions.items()
            if volume_change != 0.0
        ]
        p = u.copy()
        # Only points near a region move with it: find them once (no point travels more than a few mm).
        nearby = [self._near(weight, centroid, log_scale, u) for weight, centroid, log_scale in regions]
        for _ in range(self.FLOW_STEPS):
            velocity = np.zeros_like(p)
            for (weight, centroid, log_scale), near in zip(regions, nearby, strict=True):
                # A growing region's field covers its grown extent, so every point of it is carried exactly.
                q = p[near]
                support = centroid + (q - centroid) * np.exp(-max(log_scale, 0.0))
                velocity[near] -= (log_scale * weight.sample(support))[:, None] * (q - centroid)
            p += velocity / self.FLOW_STEPS
        return p

    @staticmethod
    def _near(weight: SourceVolume, centroid: np.ndarray, log_scale: float, u: np.ndarray) -> np.ndarray:
        """Indices of the points of ``u`` within reach of a region's field (its block, grown, plus 10 mm)."""
        corners = nib.affines.apply_affine(weight.affine, np.array([[0, 0, 0], np.array(weight.data.shape) - 1]))
        grow = np.exp(max(log_scale, 0.0))
        lo = centroid + (corners.min(axis=0) - centroid) * grow - 10.0
        hi = centroid + (corners.max(axis=0) - centroid) * grow + 10.0
        return np.flatnonzero(np.all((u >= lo) & (u <= hi), axis=1))

    def _smooth_noise(self, rng: np.random.Generator, sigma_mm: float, n: int = 1) -> np.ndarray:
        shape = self.space.grid.shape
        sigma = sigma_mm / self.space.voxel_size
        fields = []
        for _ in range(n):
            f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
            fields.append(f / max(f.std(), 1e-12))
        return np.stack(fields)

    def simulate(self, plan: SubjectPlan) -> SimulatedSubject:
        space, var = self.space, self.config.variation
        rng = np.random.default_rng(plan.seed)
        shape = space.grid.shape
        y = space.world

        volume_factor = 1.0 + plan.phenotype.brain_volume_change
        volume_factor *= 1.0 + (var.male_brain_volume_change if plan.sex == "M" else 0.0)
        volume_factor *= 1.0 + var.brain_volume_change_per_year * (plan.age - 10.0)
        volume_factor *= np.exp(var.brain_volume_sd * rng.standard_normal())
        scale = volume_factor ** (1.0 / 3.0)
        warp = var.deformation_rms_mm * self._smooth_noise(rng, var.deformation_smoothness_mm, 3)
        u = self._centre + (y - self._centre) / scale + warp.reshape(3, -1).T

        x = self.regional_map(u, plan.phenotype)
        modulation = np.ones(len(u))
        for name, (_, intensity_change) in plan.phenotype.regions.items():
            # Intensity changes follow the anatomy: they are looked up at the template point.
            modulation += intensity_change * self.region(name)[0].sample(x)

        brain = space.brain.sample(x)
        clean = space.t1.sample(x) * brain * modulation
        warped = space.labels_1mm.sample(x, order=0).astype(np.int16)

        lesion_mask, lesions = None, []
        if plan.lesion_intensity is not None:
            wm = space.white_matter.sample(x).reshape(shape)
            lesion_mask, lesions = self._draw_lesions(rng, wm, brain.reshape(shape))
            clean = np.where(lesion_mask.reshape(-1), clean * plan.lesion_intensity, clean)

        bias = np.exp(var.bias_field_sd * self._smooth_noise(rng, var.bias_field_smoothness_mm)[0]).reshape(-1)
        gain = 1.0 + var.intensity_scale_sd * rng.standard_normal()
        noise = var.noise_sd * rng.standard_normal(clean.shape) * (brain >= 0.5)
        image = np.clip(clean * bias * gain + noise, 0.0, None).astype(np.float32).reshape(shape)
        brain_ml = float(brain.sum() * space.voxel_size**3 / 1000.0)
        return SimulatedSubject(image, warped.reshape(shape), brain_ml, lesion_mask, lesions)

    def _draw_lesions(self, rng, wm: np.ndarray, brain: np.ndarray):
        eff, space = self.config.effects, self.space
        shape, vs = space.grid.shape, space.voxel_size
        candidates = np.argwhere((wm >= 0.5) & (brain >= 0.9))
        if len(candidates) == 0:
            raise ValueError("no white matter on the demo grid to place lesions in")
        world = space.world.reshape(*shape, 3)
        mask = np.zeros(shape, dtype=bool)
        lesions = []
        n = int(rng.integers(eff.lesions_per_subject[0], eff.lesions_per_subject[1] + 1))
        for _ in range(200):
            if len(lesions) == n:
                break
            centre = world[tuple(candidates[rng.integers(len(candidates))])] + rng.uniform(-vs / 2, vs / 2, 3)
            axes = rng.uniform(*eff.lesion_semi_axis_mm, 3)
            rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
            local = (world - centre) @ rotation
            blob = ((local / axes) ** 2).sum(axis=-1) <= 1.0
            blob &= brain >= 0.5
            # Keep lesions separate components (a 1-voxel gap, 26-connectivity) so ground truth counts are exact.
            touching = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3))) & blob
            if blob.sum() < 3 or touching.any() or (wm[blob] >= 0.5).mean() < 0.5:
                continue
            mask |= blob
            lesions.append(
                {
                    "centre_mm": [round(float(c), 2) for c in centre],
                    "semi_axes_mm": [round(float(a), 2) for a in axes],
                    "voxels": int(blob.sum()),
                }
            )
        if not lesions:
            raise ValueError(
                f"could not place any lesion of semi-axes {list(eff.lesion_semi_axis_mm)} mm covering at least 3 "
                f"voxels of {vs} mm; raise demo.effects.lesion_semi_axis_mm"
            )
        return mask, lesions


def achieved_volume_change(
    simulator: DemoSimulator, name: str, change: float, rng: np.random.Generator, n: int = 200_000
) -> float:
    """The relative volume change a region actually gets when ``change`` is requested.

    Monte Carlo over ``n`` random points within 45 mm of the region's centroid (random points, so the 1 mm label
    lattice does not bias small displacements); normal variation plays no part.
    """
    labels = simulator.space.labels_1mm
    index = simulator.space.label_index(name)
    centre = simulator.region(name)[1]
    points = rng.uniform(centre - 45.0, centre + 45.0, (n, 3))
    moved = simulator.regional_map(points, Phenotype("probe", {name: (change, 0.0)}))
    before = (labels.sample(points, order=0) == index).mean()
    return float((labels.sample(moved, order=0) == index).mean() / before - 1.0)


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

    def graded(label, names, volume, intensity, brain, severity_range):
        def make(_i):
            sev = float(rng.uniform(*severity_range))
            return Phenotype(label, {n: (volume * sev, intensity * sev) for n in names}, brain * sev, {label: sev})

        return make

    autism = graded(
        "autism",
        AUTISM_REGIONS,
        eff.autism_region_volume_change,
        eff.autism_region_intensity_change,
        eff.autism_brain_volume_change,
        eff.autism_severity_range,
    )
    add("ASD", "autism", "none", s.autism, rng.random(s.autism) < 0.2, autism)
    atypical = graded(
        "atypical",
        ATYPICAL_REGIONS,
        eff.atypical_region_volume_change,
        eff.atypical_region_intensity_change,
        0.0,
        eff.atypical_severity_range,
    )
    add("ATY", "atypical", "none", s.atypical, rng.random(s.atypical) < 0.3, atypical)
    high_risk = graded(
        "high_risk_typical",
        AUTISM_REGIONS,
        eff.autism_region_volume_change,
        eff.autism_region_intensity_change,
        eff.autism_brain_volume_change,
        eff.high_risk_severity_range,
    )
    add(
        "HRT",
        "high_risk_typical",
        "none",
        s.high_risk_typical,
        rng.random(s.high_risk_typical) < 0.4,
        high_risk,
    )

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


def behaviour_table(plans: list[SubjectPlan], config: DemoConfig) -> pd.DataFrame:
    """35 behaviour scores for the clinical cohorts; the planted scores follow the subgroup's region severities."""
    rng = np.random.default_rng([config.seed, 3])
    eff = config.effects
    clinical = [p for p in plans if p.cohort in CLINICAL_COHORTS]
    noise = rng.standard_normal((len(clinical), len(SCORE_COLUMNS)))
    z = pd.DataFrame(noise, columns=SCORE_COLUMNS)
    is_ds = np.array([p.cohort == "down_syndrome" for p in clinical])
    loading = eff.behaviour_loading
    for score, group, direction in PLANTED_BEHAVIOUR:
        severity = np.array([p.phenotype.severity.get(group, 0.0) for p in clinical])[is_ds]
        standard = (severity - severity.mean()) / max(severity.std(), 1e-12)
        column = z[score].to_numpy().copy()
        column[is_ds] = direction * loading * standard + np.sqrt(1.0 - loading**2) * column[is_ds]
        z[score] = column
    table = pd.DataFrame({"subject_id": [p.subject_id for p in clinical]})
    for column in SCORE_COLUMNS:
        mean, sd = _SCORE_SCALE[column.split("_", 1)[0]]
        values = np.round(mean + sd * z[column].to_numpy())
        values[rng.random(len(values)) < eff.behaviour_missing_fraction] = np.nan
        table[column] = values
    return table


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def build_demo_cohort(config: DemoConfig, folder: str | os.PathLike, *, progress: bool = True) -> dict:
    """Generate the whole demo study into ``folder`` and return its ground truth.

    The cohort is written into a temporary sibling folder and swapped in at the end, so an interrupted build
    leaves the previous cohort (if any) in place. Layout::

        folder/template/mni152_t1.nii.gz, folder/template/brain_mask.nii.gz
        folder/atlas/aal.nii.gz, folder/atlas/aal_labels.tsv
        folder/images/<subject>_T1w.nii.gz
        folder/subjects.csv, folder/behaviour.csv, folder/lesions.csv
        folder/ground_truth.json, folder/ground_truth/lesions/<subject>_lesion_mask.nii.gz
        folder/demo_config.json
    """
    folder = Path(folder)
    if folder.exists() and not (folder / "demo_config.json").is_file() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} exists and was not built by msma demo (it has no demo_config.json); refusing to replace "
            "it. Point demo.folder at a new folder, or remove this one."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    try:
        truth = _build_into(config, staging, progress=progress)
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return truth


def _swap_in(staging: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_into(config: DemoConfig, out: Path, *, progress: bool) -> dict:
    space = ReferenceSpace(config.voxel_size_mm)
    grid = space.grid
    save_volume(out / "template" / "mni152_t1.nii.gz", space.template, grid)
    save_volume(out / "template" / "brain_mask.nii.gz", space.brain_mask.astype(np.uint8), grid, dtype=np.uint8)
    save_volume(out / "atlas" / "aal.nii.gz", space.atlas, grid, dtype=np.int16)
    space.label_names.to_csv(out / "atlas" / "aal_labels.tsv", sep="\t", index=False)

    plans = plan_cohort(config)
    simulator = DemoSimulator(space, config)
    rows, lesion_truth, per_subject = [], [], {}
    for plan in tqdm(plans, desc="simulating demo subjects", unit="subject", disable=not progress):
        subject = simulator.simulate(plan)
        image_path = f"images/{plan.subject_id}_T1w.nii.gz"
        save_volume(out / image_path, subject.image, grid)
        rows.append(
            {
                "subject_id": plan.subject_id,
                "cohort": plan.cohort,
                "split": plan.split,
                "sex": plan.sex,
                "age": plan.age,
                "t1_path": f"{config.folder}/{image_path}",
            }
        )
        per_subject[plan.subject_id] = {
            "phenotype": plan.phenotype.label,
            "regions": {k: [round(v[0], 4), round(v[1], 4)] for k, v in plan.phenotype.regions.items()},
            "severity": {k: round(v, 4) for k, v in plan.phenotype.severity.items()},
            "brain_volume_ml": round(subject.brain_volume_ml, 2),
        }
        if subject.lesion_mask is not None:
            mask_path = f"ground_truth/lesions/{plan.subject_id}_lesion_mask.nii.gz"
            save_volume(out / mask_path, subject.lesion_mask.astype(np.uint8), grid, dtype=np.uint8)
            lesion_truth.append(
                {
                    "subject_id": plan.subject_id,
                    "mask": f"{config.folder}/{mask_path}",
                    "intensity": plan.lesion_intensity,
                    "kind": lesion_kind(plan.lesion_intensity, config.effects.lesion_intensities),
                    "lesions": subject.lesions,
                }
            )
    pd.DataFrame(rows).to_csv(out / "subjects.csv", index=False)
    pd.DataFrame(
        [{"subject_id": t["subject_id"], "mask": t["mask"], "group": t["kind"]} for t in lesion_truth],
        columns=["subject_id", "mask", "group"],
    ).to_csv(out / "lesions.csv", index=False)
    behaviour_table(plans, config).to_csv(out / "behaviour.csv", index=False, float_format="%g")

    on_grid = set(np.unique(space.atlas).tolist()) - {0}
    lost = space.label_names.loc[~space.label_names["index"].isin(on_grid), "name"].tolist()
    subgroup = sorted(p.subject_id for p in plans if p.phenotype.label == "down_syndrome_subgroup")
    truth = {
        "generator_version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "grid": {
            "shape": list(grid.shape),
            "affine": grid.affine.tolist(),
            "voxel_size_mm": config.voxel_size_mm,
        },
        "atlas": {
            "name": "AAL",
            "labels_named": int(len(space.label_names)),
            "labels_on_grid": len(on_grid),
            "labels_lost": lost,
        },
        "reference_cohort": REFERENCE,
        "planted_cohort": "down_syndrome",
        "planted_subgroup": subgroup,
        "planted_subgroup_female": sum(p.sex == "F" for p in plans if p.subject_id in set(subgroup)),
        "planted_regions": {k: list(v) for k, v in PLANTED_REGIONS.items()},
        "planted_behaviour_pairs": [
            {"score": score, "region_group": group, "regions": list(PLANTED_REGIONS[group]), "direction": d}
            for score, group, d in PLANTED_BEHAVIOUR
        ]
        if config.effects.behaviour_loading > 0
        else [],
        "behaviour_noise_scores": [c for c in SCORE_COLUMNS if c not in {s for s, _, _ in PLANTED_BEHAVIOUR}],
        "lesions": lesion_truth,
        "subjects": per_subject,
    }
    _write_text(out / "ground_truth.json", json.dumps(truth, indent=1))
    _write_text(out / "demo_config.json", json.dumps({"digest": config.digest(), **config.to_dict()}, indent=1))
    return truth


def cohort_is_current(config: DemoConfig, folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a complete cohort built from exactly this configuration."""
    stamp = Path(folder) / "demo_config.json"
    try:
        return json.loads(stamp.read_text()).get("digest") == config.digest()
    except (OSError, ValueError):
        return False


_MANIFEST_TEMPLATE = """\
# The study description read by every msma command (msma validate, msma demo, and the commands that
# train, score and explore). This one describes the embedded demo study that `msma demo` builds into
# {folder_display}/ from the real MNI152 2009 template and AAL atlas. Copy it and edit it to point msma-explorer at
# your own data. Paths are relative to this file's folder; unknown keys are errors.

version: 1                                # schema version of this file

study:
  name: msma-explorer demo                # shown in the app and in run provenance
  description: >-                         # free text, kept in run provenance
    Simulated school-age T1w MRIs: a typical reference cohort and Down-syndrome-like, autism-like,
    atypical and high-risk-typical cohorts, plus typical subjects with white-matter lesions.

template:                                 # defines the study grid: every volume must share its shape and affine
  image: {prefix}template/mni152_t1.nii.gz
  brain_mask: {prefix}template/brain_mask.nii.gz   # non-zero = brain; scores are computed inside it

atlas:                                    # regions for ROI anomaly scores
  name: AAL                               # shown in the app
  image: {prefix}atlas/aal.nii.gz              # integer labels on the template grid, 0 = background
  labels: {prefix}atlas/aal_labels.tsv         # table with columns index, name: every label needs a name

subjects:
  table: {prefix}subjects.csv                  # CSV/TSV/Parquet, one row per subject
  id_column: subject_id                   # unique subject id
  cohort_column: cohort                   # cohort name; the reference cohort is named below
  split_column: split                     # train, val, test or none (only the reference cohort trains)
  sex_column: sex                         # F or M (empty if unknown)
  age_column: age                         # years (empty if unknown)
  images:                                 # modality: column holding that image's path
    T1w: t1_path

reference_cohort: typical                 # the typical (inlier) cohort the models learn from

behaviour:                                # optional: behavioural scores to correlate with ROI anomaly scores
  table: {prefix}behaviour.csv
  id_column: subject_id                   # ids must appear in the subjects table
  scores: all                             # 'all' columns but the id (each must be numeric), or a list of names

lesions:                                  # optional: ground-truth lesion masks, for msma evaluate-lesions
  table: {prefix}lesions.csv                   # one row per subject with a mask
  id_column: subject_id                   # ids must appear in the subjects table
  mask_column: mask                       # path of a binary mask (0/1) on the template grid
  group_column: group                     # optional: results are reported per group (here faint / bright)

model:
  n_scales: 20                            # noise scales L of the multiscale score norms
  min_train_subjects: {min_train}               # fewest reference training subjects accepted
  seed: 0                                 # seed of training and scoring
  patch_size: 3                           # k of the k x k x k patch score norms behind the heatmaps (odd)

output_dir: runs                          # each refresh writes runs/<run_id>/ and points runs/latest at it

options:
  resample_to_template: false             # true: resample off-grid volumes (trilinear) instead of rejecting them
  allow_paths_outside: false              # true: allow paths leaving this folder (.., absolute, symlinks)

demo:                                     # only for the demo study: what `msma demo` generates
  folder: {folder}                        # where the cohort is written (replaced on every rebuild)
  seed: {seed}                                 # same seed, same cohort, byte for byte
  voxel_size_mm: {voxel_size}                      # 6 mm: 28x32x28 grid; 4 mm: 40x48x40 (about 5x slower to score)
  sizes:                                  # subjects per cohort
    reference_train: {sizes.reference_train}
    reference_val: {sizes.reference_val}
    reference_test: {sizes.reference_test}
    down_syndrome: {sizes.down_syndrome}
    down_syndrome_subgroup: {sizes.down_syndrome_subgroup}            # share one planted regional phenotype
    subgroup_female: {sizes.subgroup_female}                   # of whom female
    autism: {sizes.autism}
    atypical: {sizes.atypical}
    high_risk_typical: {sizes.high_risk_typical}
    lesion: {sizes.lesion}                              # held-out typical subjects with white-matter lesions
  # effects: and variation: override the planted effect sizes and the normal variation; their keys and
  # defaults are listed in the README (section "The demo cohort").
"""


def render_demo_manifest(config: DemoConfig, prefix: str) -> str:
    """The commented manifest describing a demo cohort built into ``prefix`` (relative to the manifest).

    The top-level ``data_manifest.yaml`` is this text for the default configuration and ``prefix='demo_data/'``.
    Non-default effects or variation are written out so the manifest rebuilds the same cohort.
    """
    text = _MANIFEST_TEMPLATE.format(
        prefix=prefix,
        folder=config.folder,
        folder_display=prefix.rstrip("/") or ".",
        seed=config.seed,
        voxel_size=f"{config.voxel_size_mm:g}",
        sizes=config.sizes,
        min_train=min(100, config.sizes.reference_train),
    )
    extra = {}
    for name in ("effects", "variation"):
        default = dataclasses.asdict(getattr(DemoConfig(), name))
        changed = {k: v for k, v in dataclasses.asdict(getattr(config, name)).items() if default[k] != v}
        if changed:
            extra[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}
    if extra:
        block = yaml.safe_dump(extra, sort_keys=True, default_flow_style=False)
        text += "".join(f"  {line}\n" for line in block.splitlines())
    return text


def write_demo_study(config: DemoConfig, folder: str | os.PathLike, *, progress: bool = True) -> Path:
    """Build a self-contained demo study in ``folder``: the cohort and a manifest describing it.

    Returns the path of ``folder/data_manifest.yaml``. Used by tests and by ``msma demo --out``.
    """
    folder = Path(folder)
    config = dataclasses.replace(config, folder="data")
    build_demo_cohort(config, folder / config.folder, progress=progress)
    manifest = folder / "data_manifest.yaml"
    _write_text(manifest, render_demo_manifest(config, prefix=f"{config.folder}/"))
    return manifest
