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
SOM_INPUT = "som-input"

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

# the page shell: the run, the URL and the rooms
URL = "url"
"""dcc.Location: ``?run=<id>`` picks the run, the fragment holds the view state (:mod:`app.state`)."""
RUN = "run"
"""Store: the id of the run every callback reads."""
VIEW_STATE = "view-state"
"""Store: the view state the URL fragment shows (:mod:`app.state`), so a Back or a pasted link can be told apart
from the page's own update of the fragment."""
PAGE = "page"
"""The page of one run (header, side panel, rooms), replaced when the URL names another run or state."""
LINK_NOTICE = "link-notice"
"""Toast: what a link named that this run does not have."""
ROOM = "room"
"""Radio in the header: which room the page shows."""
ROOMS = {"explore": "room-explore", "sweep": "room-sweep", "subject": "room-subject", "run": "room-run"}
RUN_PICKER = "run-picker"
RUN_POLL = "run-poll"
NEWER_RUN = "newer-run"
COPY_LINK = "copy-link"
SUBJECT = "subject-search"
"""Dropdown in the header: a subject found by id, highlighted in every view and told in the subject room."""
PAIR = "pair"
"""Store: [ROI, behaviour] of the open scatter, or None."""
RUN_MAP = "run-map"
"""Button: back from a sweep grid's map to the run's own map."""

# sweep room
SWEEP_GRAPH = "sweep-graph"
SWEEP_ROWS = "sweep-rows"
SWEEP_COLS = "sweep-cols"
SWEEP_TOPOLOGY = "sweep-topology"
SWEEP_START = "sweep-start"
SWEEP_CANCEL = "sweep-cancel"
SWEEP_PROGRESS = "sweep-progress"
SWEEP_STATUS = "sweep-status"
SWEEP_POLL = "sweep-poll"
SWEEP_JOB = "sweep-job"
"""Store: {"job": id} of the sweep this page started, or None."""
SWEEP_DONE = "sweep-done"
"""Store: the id of the last sweep this page saw finish (redraws the sweep heatmap and the badge)."""
STABILITY = "stability"
"""The map view's badge: how stable the selected prototype is over the neighbouring grids (its tooltip: the full
sentence)."""
SWEEP_MAP = "sweep-map"

# subject room
SUBJECT_PROFILE = "subject-profile"
SUBJECT_CENTILES = "subject-centiles"
SUBJECT_ROIS = "subject-rois"
SUBJECT_HEADER = "subject-header"
SUBJECT_HEATMAP = "subject-heatmap"
"""Switch: the slice views show the found subject's own heatmap instead of the selection's mean."""

# run room
PROVENANCE = "provenance"

# export
EXPORT = "export"
EXPORT_DOWNLOAD = "export-download"
EXPORT_NOTE = "export-note"
EXPORT_JOB = "export-job"
"""Store: {"job": id} of the export this page started, or None."""
EXPORT_POLL = "export-poll"
EXPORT_DONE = "export-done"
"""Store: the id of the finished export whose zip the page fetches (in its own callback, so a poll cannot
overtake the download)."""
SUBJECT_SHOW = "subject-show"
"""Button in the subject room: show the subject's own heatmap in the slice views."""
