"""The demo's subject simulator: the real MNI152 template seen through one subject's anatomy and acquisition.

Every subject is the template seen through a smooth random deformation of a few mm, in affine template space as
a registered study holds it: the subject's brain volume (varying with age, sex and cohort) is divided out of the
image, as affine registration would, and kept as a number (``icv_ml``). On top come regional phenotypes (AAL
regions shrunk or grown about their centroid and changed in intensity), a smooth multiplicative bias field, a
global intensity scale and noise; lesion subjects get ellipsoidal white-matter lesions with their ground-truth
mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from analysis.demo.config import DemoConfig
from analysis.demo.plan import Phenotype, SubjectPlan
from analysis.study.reference_space import ReferenceSpace, SourceVolume


@dataclass
class SimulatedSubject:
    """One generated subject, in affine template space. ``warped_labels`` is the AAL atlas carried through the
    subject's deformation; ``brain_volume_ml`` is its brain volume before registration and ``icv_ml`` the
    head-size measure a study would record for it (that volume seen through a measurement error)."""

    image: np.ndarray
    warped_labels: np.ndarray
    brain_volume_ml: float
    icv_ml: float
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
        # The image is written in affine template space: registration divides the subject's global scale out,
        # all but the fraction ``registration_residual`` of it (in log scale), as a regularised fit leaves.
        scale = volume_factor ** (var.registration_residual / 3.0)
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
        # Brain volume in the subject's own space: the registered brain scaled back by what registration removed.
        brain_ml = float(brain.sum() * space.voxel_size**3 / 1000.0) * volume_factor / scale**3
        icv_ml = brain_ml * np.exp(var.icv_measurement_sd * rng.standard_normal())
        return SimulatedSubject(image, warped.reshape(shape), brain_ml, icv_ml, lesion_mask, lesions)

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
