"""The norm-space flow: a small normalizing flow on MSMA score-norm vectors, one of the MSMA detectors."""
