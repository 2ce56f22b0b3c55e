"""The methods a run reports, each named once: key (as stored in a run), display name and description.

The refresh writes the keys and descriptions into ``run.json``; the report, the explorer and the experiments show
the display names. Three families:

- :data:`NORM_SETS`: what the multiscale score norms are computed with;
- :data:`DETECTORS`: the MSMA detectors fitted on each set of norms;
- :data:`LESION_METHODS`: the voxel maps of the lesion evaluation, in the order of axis 1 of ``lesion_maps.npy``
  (Spatial-MSMA's two voxel mappings, then the baselines it is compared with, all through the same protocol).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str
    name: str
    description: str


NORM_SETS = (
    Method("msma", "MSMA", "trained score network (low-rank Gaussian score + learned residual)"),
    Method("lowrank", "Low-rank Gaussian", "low-rank Gaussian score, no network"),
    Method("gaussian", "Per-voxel Gaussian", "per-voxel Gaussian score, no network (baseline)"),
    Method("gnsm", "GNSM", "Gumbel-noise score matching on the manifest's gnsm: subject columns (with the log MSMA "
           "norms when with_score_norms), its norms at each GNSM noise scale"),
)
DETECTORS = (
    Method("gmm", "GMM", "Gaussian mixture on the log norms, components chosen by held-out likelihood"),
    Method("knn", "KNN", "distance to the k-th nearest training subject"),
    Method("flow", "Flow", "a small normalizing flow on the log norms"),
)
SPATIAL_VARIANTS = (
    Method("spatial_msma", "Spatial-MSMA", "Spatial-MSMA: conditional flow NLL of the patch norms (calibrated per "
           "voxel), each patch's value at its centre voxel (the heatmaps)"),
    Method("spatial_msma_min", "Spatial-MSMA (min over patches)", "Spatial-MSMA's patch scores, each voxel the "
           "minimum over the patches covering it"),
)
LESION_BASELINES = (
    Method("z_score", "Voxel z-score", "voxel-wise |z| of the intensity against the reference training subjects"),
    Method("voxel_magnitude", "Voxel score magnitude", "per-voxel score magnitude sum_i |sigma_i s(x, sigma_i)|, "
           "summed over scales, no flow"),
    Method("patch_magnitude", "Patch-norm magnitude", "k^3 patch norms summed over scales, no flow, each patch's "
           "value at its centre voxel (the voxel mapping of Spatial-MSMA)"),
    Method("patch_magnitude_min", "Patch-norm magnitude (min over patches)", "k^3 patch norms summed over scales, "
           "no flow, each voxel the minimum over the patches covering it"),
    Method("unconditional_flow", "Unconditional flow", "the same flow on the patch norms without positional "
           "encoding, per-voxel standardisation, image context or per-voxel calibration (the NLL in nats)"),
)
LESION_METHODS = (*SPATIAL_VARIANTS, *LESION_BASELINES)


def names(methods: tuple[Method, ...]) -> dict[str, str]:
    """Key -> display name."""
    return {m.key: m.name for m in methods}


def descriptions(methods: tuple[Method, ...]) -> dict[str, str]:
    """Key -> description (as ``run.json`` records them)."""
    return {m.key: m.description for m in methods}
