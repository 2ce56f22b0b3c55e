"""Lesion-segmentation evaluation of voxel anomaly maps (dissertation ch. 5.4): the metrics
(:mod:`~analysis.lesions.metrics`), the protocol that turns a map into a segmentation
(:mod:`~analysis.lesions.protocol`) and the evaluation of a study's lesion subjects
(:mod:`~analysis.lesions.evaluation`). The names below are the package's public interface."""

from analysis.lesions.evaluation import (
    METRICS,
    SUPPLEMENTARY,
    LesionEvaluation,
    evaluate_methods,
    evaluate_study_lesions,
    summarise,
)
from analysis.lesions.metrics import (
    component_detection,
    directed_surface_distances,
    hausdorff_distance,
    mean_surface_distance,
    surface,
    symmetric_mean_surface_distance,
    tpr_at_zero_false_positives,
    voxel_auroc,
)
from analysis.lesions.protocol import (
    LESION_PROTOCOL,
    LesionProtocol,
    best_threshold,
    candidate_thresholds,
    evaluate_map,
    evaluate_segmentation,
    postprocess,
)

__all__ = [
    "LESION_PROTOCOL",
    "METRICS",
    "SUPPLEMENTARY",
    "LesionEvaluation",
    "LesionProtocol",
    "best_threshold",
    "candidate_thresholds",
    "component_detection",
    "directed_surface_distances",
    "evaluate_map",
    "evaluate_methods",
    "evaluate_segmentation",
    "evaluate_study_lesions",
    "hausdorff_distance",
    "mean_surface_distance",
    "postprocess",
    "summarise",
    "surface",
    "symmetric_mean_surface_distance",
    "tpr_at_zero_false_positives",
    "voxel_auroc",
]
