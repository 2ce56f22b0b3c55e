"""The refresh: manifest -> score model -> score norms -> Spatial-MSMA -> detectors -> exploration -> one new published
run."""
