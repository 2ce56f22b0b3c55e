"""Settings of the embedded demo cohort: the ``demo:`` block of the manifest.

Defaults imitate the Down-syndrome case study (dissertation ch. 6.3) and the lesion study (ch. 5.4); every
field can be overridden in the manifest. The study schema keeps the block as written
(:class:`analysis.study.manifest.DemoBlock`); :func:`demo_config_from_mapping` reads it into a :class:`DemoConfig`,
checking types, unknown keys and ranges
(:func:`read_demo_config` does the same inside :func:`~analysis.study.manifest.load_manifest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from analysis.study.errors import ManifestError
from analysis.study.manifest import DEFAULT_DEMO_FOLDER
from analysis.study.settings import FieldReader, settings_from_mapping

GENERATOR_VERSION = 4
"""Bumped whenever the generator's output changes for the same settings (invalidates built cohorts)."""


@dataclass(frozen=True)
class CohortSizes:
    """How many subjects each cohort has."""

    reference_train: int = 240
    reference_val: int = 30
    reference_test: int = 50
    down_syndrome: int = 28
    down_syndrome_subgroup: int = 16
    subgroup_female: int = 12
    autism: int = 40
    atypical: int = 20
    high_risk_typical: int = 40
    lesion: int = 40


@dataclass(frozen=True)
class Variation:
    """Normal anatomical and acquisition variation shared by every subject."""

    deformation_rms_mm: float = 2.0
    """Root-mean-square length of the smooth random displacement, per axis."""
    deformation_smoothness_mm: float = 20.0
    """Gaussian width of the random displacement field."""
    brain_volume_sd: float = 0.04
    """Between-subject standard deviation of total brain volume (fraction)."""
    male_brain_volume_change: float = 0.08
    """Male brain volume relative to female (fraction)."""
    brain_volume_change_per_year: float = 0.01
    """Growth of total brain volume per year of age around 10 years (fraction)."""
    registration_residual: float = 0.0
    """Share of each subject's global scale (in log scale) that affine registration to the template leaves in the
    image: 0 removes head size exactly, 1 keeps the native-space brain."""
    icv_measurement_sd: float = 0.02
    """Relative error of the recorded head size (``icv_ml`` of subjects.csv) against the true brain volume."""
    bias_field_sd: float = 0.05
    """Standard deviation of the log bias field."""
    bias_field_smoothness_mm: float = 50.0
    intensity_scale_sd: float = 0.05
    """Standard deviation of the global intensity gain."""
    noise_sd: float = 0.02
    """Gaussian noise inside the brain, in template intensity units (brain mean about 0.7)."""


@dataclass(frozen=True)
class Effects:
    """Planted effects. Volume changes are fractions of the region's volume, intensity changes fractions of its
    intensity; severities of individual subjects vary around them."""

    subgroup_region_volume_change: float = -0.20
    subgroup_region_intensity_change: float = -0.10
    subgroup_severity_range: tuple[float, ...] = (0.6, 1.4)
    """Each subgroup member draws, per region group, a severity multiplying the two changes above."""
    down_syndrome_brain_volume_change: float = -0.10
    """Every Down-syndrome-like subject has a smaller total brain volume."""
    subgroup_brain_volume_change: float = -0.04
    """The subgroup's brain is smaller still."""
    heterogeneous_regions: int = 2
    """Regions changed in each non-subgroup Down-syndrome-like subject, drawn from HETEROGENEOUS_POOL."""
    heterogeneous_volume_change: float = 0.25
    """Magnitude of their volume change (random sign)."""
    heterogeneous_intensity_change: float = 0.06
    autism_region_volume_change: float = 0.10
    autism_region_intensity_change: float = 0.03
    autism_brain_volume_change: float = 0.03
    autism_severity_range: tuple[float, ...] = (0.0, 1.5)
    high_risk_severity_range: tuple[float, ...] = (0.0, 0.5)
    """High-risk typical subjects carry a faint version of the autism-like phenotype."""
    atypical_region_volume_change: float = -0.15
    atypical_region_intensity_change: float = 0.05
    atypical_severity_range: tuple[float, ...] = (0.5, 1.5)
    behaviour_loading: float = 0.8
    """Standardised loading of each planted score on its region group's severity (0: no planted pairs)."""
    behaviour_missing_fraction: float = 0.06
    lesion_intensities: tuple[float, ...] = (1.2, 1.5)
    """Lesion intensity factors: lesion subjects alternate between them (faint x1.2 and bright x1.5)."""
    lesions_per_subject: tuple[int, ...] = (2, 5)
    lesion_semi_axis_mm: tuple[float, ...] = (5.0, 12.0)
    region_smoothing_mm: float = 2.0
    """Gaussian width that softens a region's edges before it is deformed."""


PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    "hard": {
        "subgroup_region_volume_change": -0.20,
        "subgroup_region_intensity_change": -0.06,
    },
}
"""Named sets of planted effects (``demo.preset``), as changes to the :class:`Effects` defaults. ``default``: the
subgroup's regional phenotype set by the recovery-ceiling rule (experiments/recovery_ceiling.py: the best
image-derived map with the true subgroup finds at least 12 of the 14 planted regions at Bonferroni p < 0.05 with
no false discovery); ``hard``: the weaker phenotype of earlier releases, which no map recovers after a Bonferroni
correction over about 100 ROIs. Keys of ``demo.effects`` override the preset's."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo cohort; the ``demo:`` block of the manifest."""

    preset: str = "default"
    """Which :data:`PRESETS` entry sets the planted effects before ``effects:`` overrides them."""
    folder: str = DEFAULT_DEMO_FOLDER
    """Where the cohort is written, relative to the manifest's folder (checked by the manifest, which resolves it)."""
    seed: int = 0
    voxel_size_mm: float = 6.0
    """Isotropic voxel size of the demo grid: 6 mm gives 28x32x28, 4 mm gives 40x48x40."""
    sizes: CohortSizes = field(default_factory=CohortSizes)
    variation: Variation = field(default_factory=Variation)
    effects: Effects = field(default_factory=Effects)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        payload = json.dumps({"generator": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


_UNIT_INTERVAL = ("behaviour_loading", "behaviour_missing_fraction")
_PAIRS = (
    "subgroup_severity_range",
    "autism_severity_range",
    "high_risk_severity_range",
    "atypical_severity_range",
    "lesions_per_subject",
    "lesion_semi_axis_mm",
)


def read_demo_config(mapping: Mapping | None, reader: FieldReader) -> DemoConfig:
    """Read the ``demo:`` block into a :class:`DemoConfig`, adding every problem to ``reader``.

    Given to :func:`analysis.study.manifest.load_manifest` (``read_demo=``) so the block's problems are reported
    with the rest of the manifest's. Ranges are checked only while ``reader`` holds no problem: a value that failed
    to read is left at its default, whose range says nothing.
    """
    config = settings_from_mapping(DemoConfig, mapping, reader, "demo")
    if reader.problems:
        return config
    if config.preset not in PRESETS:
        reader.problem("demo.preset", f"one of {sorted(PRESETS)}", repr(config.preset))
        return config
    written = (mapping or {}).get("effects") or {}
    chosen = dataclasses.replace(Effects(), **PRESETS[config.preset])
    config = dataclasses.replace(config, effects=dataclasses.replace(
        chosen, **{name: getattr(config.effects, name) for name in written}))
    s, e = config.sizes, config.effects
    for name, value in dataclasses.asdict(s).items():
        if value < 0:
            reader.problem(f"demo.sizes.{name}", "a count >= 0", str(value))
    if s.reference_train < 1:
        reader.problem("demo.sizes.reference_train", "at least 1 training subject", str(s.reference_train))
    if not s.subgroup_female <= s.down_syndrome_subgroup <= s.down_syndrome:
        reader.problem(
            "demo.sizes",
            "subgroup_female <= down_syndrome_subgroup <= down_syndrome",
            f"{s.subgroup_female}, {s.down_syndrome_subgroup}, {s.down_syndrome}",
        )
    if not 1.0 <= config.voxel_size_mm <= 12.0:
        reader.problem("demo.voxel_size_mm", "a voxel size between 1 and 12 mm", f"{config.voxel_size_mm:g}")
    for name in _PAIRS:
        value = getattr(e, name)
        if len(value) != 2 or value[0] > value[1] or value[0] < 0:
            reader.problem(f"demo.effects.{name}", "a [low, high] pair with 0 <= low <= high", str(list(value)))
    for name in _UNIT_INTERVAL:
        value = getattr(e, name)
        if not 0.0 <= value < 1.0 or (name == "behaviour_loading" and value > 1.0):
            reader.problem(f"demo.effects.{name}", "a fraction in [0, 1)", f"{value:g}")
    residual = config.variation.registration_residual
    if not 0.0 <= residual <= 1.0:
        reader.problem("demo.variation.registration_residual", "a fraction in [0, 1]", f"{residual:g}")
    if not e.lesion_intensities or any(v <= 0 for v in e.lesion_intensities):
        reader.problem(
            "demo.effects.lesion_intensities", "one or more positive factors", str(list(e.lesion_intensities))
        )
    if not 0 <= e.heterogeneous_regions <= 22:
        reader.problem(
            "demo.effects.heterogeneous_regions", "0 to 22 regions (the size of the pool)", str(e.heterogeneous_regions)
        )
    for name, value in {**dataclasses.asdict(e), **dataclasses.asdict(config.variation)}.items():
        if name.endswith("_change") and value <= -1.0:
            reader.problem(f"demo.{name}", "a change above -1 (-100 %)", f"{value:g}")
        if name.endswith(("_sd", "_mm")) and not isinstance(value, tuple) and value < 0:
            reader.problem(f"demo.{name}", "a non-negative value", f"{value:g}")
    return config


def demo_config_from_mapping(mapping: Mapping | None, file: str = "data_manifest.yaml") -> DemoConfig:
    """Read a ``demo:`` block (``Manifest.demo.settings``, or a mapping on its own) into a :class:`DemoConfig`.

    Parameters
    ----------
    mapping
        The block as written; ``None`` gives the defaults.
    file
        The manifest the block comes from, named in the problems.

    Raises
    ------
    ManifestError
        Listing every problem: unknown keys, values of the wrong type, counts and ranges out of bounds.
    """
    reader = FieldReader(file)
    config = read_demo_config(mapping, reader)
    if reader.problems:
        raise ManifestError(reader.problems)
    return config
