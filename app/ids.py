"""Every component id of the explorer, in one place: the layout and the callbacks refer to these names only."""

# header
COHORT = "cohort"
"""Dropdown: the cohort whose prototype, regions and correlations are shown."""

# per-browser state (dcc.Store: ids and small JSON, never volumes)
SELECTION = "selection"
"""{"cohort": str, "units": [[row, col], ...]}: the selected SOM units (their members, of every cohort)."""
REGIONS = "regions"
"""{"cohort", "units", "significant": [ROI, ...], "shown": [ROI, ...], "kept": int, "correction", "alpha"}: the live
region step (its significant ROIs, and those the box plots show)."""
CROSSHAIR = "crosshair"
"""{"voxel": [i, j, k], "roi": str | None, "plane": str, "moved": [plane, ...]}: where the slices cut, the outlined
ROI, the last view used, and the views whose cut the last move changed."""
KEYS = "slice-keys"
"""{"step": +1 or -1, "plane": str, "count": int}: a key stepping the slice under the pointer (assets/keys.js)."""

# SOM map
SOM_GRAPH = "som-graph"
SOM_LAYER = "som-layer"

# brain slices
SLICE_GRAPHS = {"axial": "slice-axial", "coronal": "slice-coronal", "sagittal": "slice-sagittal"}
PLANES = ("axial", "coronal", "sagittal")
THRESHOLD = "slice-threshold"
OPACITY = "slice-opacity"
RADIOLOGICAL = "slice-radiological"
RANGE_MODE = "slice-range-mode"
RANGE_MAX = "slice-range-max"
PEAK = "slice-peak"
SLICE_NOTE = "slice-note"
SLICE_COLORBAR = "slice-colorbar"

# ROI box plots
ROI_GRAPH = "roi-graph"
ROI_COUNT = "roi-count"

# behaviour correlations
CORRELATION_GRAPH = "correlation-graph"
CORRELATION_MODE = "correlation-mode"
SCATTER_MODAL = "scatter-modal"
SCATTER_GRAPH = "scatter-graph"
SCATTER_VIEW = "scatter-view"

# statistics controls and the selection's summary
ROI_SCORES = "roi-scores"
"""Radio: the ROI scores the region step and the correlations read, "adjusted" (for covariates) or "raw"."""
CORRECTION = "correction"
ALPHA = "alpha"
FDR = "fdr"
PERMUTATIONS = "permutations"
P_FLOOR = "p-floor"
SUMMARY = "selection-summary"
