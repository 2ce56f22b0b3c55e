"""MSMA detectors on score-norm vectors (GMM, KNN) and the OOD detection metrics."""
