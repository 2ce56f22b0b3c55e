"""Read ``data_manifest.yaml``, the one description of a study, into typed, frozen objects.

This module checks the manifest's own structure (known keys, types, paths that stay inside the manifest's
folder). Whether the files it names exist and agree with each other is checked by
:mod:`analysis.study.validation`. Paths resolve relative to the manifest's folder.

About 500 lines, kept whole: it is the schema of one file, and its sections share one reader and one pass.
"""

from __future__ import annotations

import hashlib
import math
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis.study.errors import ManifestError, Problem
from analysis.study.gnsm_block import GNSMSpec, read_gnsm
from analysis.study.settings import FieldReader, describe, safe_load_unique, settings_from_mapping

MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test", "none")
COVARIATE_KINDS = ("numeric", "categorical")
DEFAULT_DEMO_FOLDER = "demo_data"
"""Where a generated demo cohort lives when the ``demo:`` block names no folder (relative to the manifest)."""
SettingsReader = Callable[[Mapping, FieldReader], object]
"""Reads a block's settings, adding its problems to the reader (:func:`analysis.demo.config.read_demo_config`)."""


@dataclass(frozen=True)
class TemplateSpec:
    """The template image that defines the study grid, and its brain mask (same grid)."""

    image: Path
    brain_mask: Path


@dataclass(frozen=True)
class AtlasSpec:
    """An integer label image on the template grid and a table naming each label (columns ``index``, ``name``)."""

    name: str
    image: Path
    labels: Path


@dataclass(frozen=True)
class SubjectsSpec:
    """The subjects table and which of its columns hold what."""

    table: Path
    images: Mapping[str, str]
    """Modality name -> column holding that modality's image path (relative to the manifest's folder)."""
    id_column: str = "subject_id"
    cohort_column: str = "cohort"
    split_column: str = "split"
    sex_column: str = "sex"
    age_column: str = "age"
    covariates: Mapping[str, str | None] | None = None
    """Columns the normative model adjusts ROI scores for: column -> ``numeric``, ``categorical``, or None where
    the kind is read from the data (the list form). None when the manifest has no ``subjects.covariates``: then the
    age and sex columns, where they hold a value (:func:`analysis.study.covariates.check_covariates`)."""


@dataclass(frozen=True)
class BehaviourSpec:
    """A table of behavioural scores, one row per subject, keyed by subject id."""

    table: Path
    scores: tuple[str, ...] | None
    """Score columns to analyse; ``None`` means every column except the id column."""
    id_column: str = "subject_id"


@dataclass(frozen=True)
class LesionsSpec:
    """Ground-truth lesion masks of some subjects, for ``msma evaluate-lesions`` (one row per subject)."""

    table: Path
    id_column: str = "subject_id"
    mask_column: str = "mask"
    """Column holding the path of a binary lesion mask on the template grid (relative to the manifest's folder)."""
    group_column: str | None = None
    """Optional column grouping the subjects in the evaluation (e.g. lesion intensity); results are per group."""


@dataclass(frozen=True)
class ModelSettings:
    """Settings shared by the models trained on the study."""

    n_scales: int = 20
    """Number L of noise scales in the multiscale score norms."""
    min_train_subjects: int = 100
    """Fewest reference-cohort training subjects the score model accepts."""
    seed: int = 0
    """Seed of every random choice made while training and scoring."""
    patch_size: int = 3
    """Edge k (odd) of the k x k x k neighbourhood of Spatial-MSMA's patch score norms."""


@dataclass(frozen=True)
class Options:
    """Switches that relax checks; all off by default."""

    resample_to_template: bool = False
    """Resample subject volumes whose grid differs from the template (trilinear) instead of rejecting them."""
    allow_paths_outside: bool = False
    """Allow paths that leave the manifest's folder (through ``..``, an absolute path or a symlink)."""


@dataclass(frozen=True)
class DemoBlock:
    """The ``demo:`` block as the study sees it: the cohort's folder, and the block as written, whose settings are
    the generator's to read (:func:`analysis.demo.config.demo_config_from_mapping`), so this schema needs no demo."""

    folder: str
    """Folder of the generated cohort, relative to the manifest's folder; replaced whenever the demo is rebuilt."""
    settings: Mapping[str, Any]
    """Every key of the block as written, ``folder`` included (read-only at the top level)."""


@dataclass(frozen=True)
class Manifest:
    """A parsed study description. Build it with :func:`load_manifest`."""

    path: Path
    root: Path
    sha256: str
    study_name: str
    template: TemplateSpec
    atlas: AtlasSpec
    subjects: SubjectsSpec
    reference_cohort: str
    output_dir: Path
    behaviour: BehaviourSpec | None = None
    lesions: LesionsSpec | None = None
    model: ModelSettings = field(default_factory=ModelSettings)
    options: Options = field(default_factory=Options)
    demo: DemoBlock | None = None
    """The generated demo cohort's ``demo:`` block; ``None`` for a study of real data."""
    missing_values: tuple[str | int | float, ...] = ()
    """The study's own missing-value markers, besides empty cells and the usual ones
    (:data:`analysis.study.tables.DEFAULT_MISSING_MARKERS`)."""
    gnsm: GNSMSpec | None = None
    """Subject columns GNSM models next to the score norms (:mod:`analysis.study.gnsm_block`); None: no GNSM."""

    def resolve(self, value: str | os.PathLike) -> Path:
        """Resolve a path written in the manifest or one of its tables against the manifest's folder."""
        return resolve_path(self.root, value)


_TOP_LEVEL = {
    "version": True,
    "study": False,
    "template": True,
    "atlas": True,
    "subjects": True,
    "reference_cohort": True,
    "behaviour": False,
    "lesions": False,
    "model": False,
    "output_dir": True,
    "options": False,
    "demo": False,
    "missing_values": False,
    "gnsm": False,
}
_STUDY_KEYS = {"name", "description"}


def resolve_path(root: Path, value: str | os.PathLike) -> Path:
    """``root / value`` without resolving symlinks (so the path stays recognisable in messages)."""
    p = Path(os.fspath(value))
    return p if p.is_absolute() else root / p


def path_escapes(root: Path, path: Path) -> bool:
    """True when ``path``, after following ``..`` and symlinks, lies outside ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return os.path.commonpath([real_root, real]) != real_root


def load_manifest(path: str | os.PathLike, *, read_demo: SettingsReader | None = None) -> Manifest:
    """Parse and structurally check a manifest.

    Parameters
    ----------
    path
        The manifest file; problems name it as given.
    read_demo
        Checks the ``demo:`` block's settings, so their problems are reported with the others (``msma validate`` and
        ``msma demo`` pass :func:`analysis.demo.config.read_demo_config`); without it only its folder is checked.

    Raises
    ------
    ManifestError
        Listing every problem found: unreadable or empty file, bad YAML, unknown or missing keys, values of the
        wrong type, paths that leave the manifest's folder when ``options.allow_paths_outside`` is false.
    """
    path = Path(path)
    name = str(path)
    reader = FieldReader(name)
    if not path.is_file():
        raise ManifestError([Problem(name, "", "an existing manifest file", "no such file")])
    raw_bytes = path.read_bytes()
    text = raw_bytes.decode("utf-8", errors="replace")
    if not text.strip():
        raise ManifestError([Problem(name, "", "a YAML mapping describing the study", "an empty file")])
    try:
        doc = safe_load_unique(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ManifestError([Problem(name, where, "valid YAML", f"a syntax error: {exc}")]) from None
    if not isinstance(doc, Mapping):
        raise ManifestError([Problem(name, "", "a YAML mapping at the top level", describe(doc))])

    reader.check_keys(doc, _TOP_LEVEL, "")
    version = doc.get("version")
    if "version" in doc and (type(version) is not int or version != MANIFEST_VERSION):
        reader.problem("version", f"{MANIFEST_VERSION}", describe(version))

    root = path.parent.resolve()
    study = reader.mapping(doc.get("study"), "study") or {}
    reader.check_keys(study, _STUDY_KEYS, "study")
    study_name = str(study.get("name", path.parent.name or "study"))

    template = _read_template(reader, doc.get("template"))
    atlas = _read_atlas(reader, doc.get("atlas"))
    subjects = _read_subjects(reader, doc.get("subjects"))
    behaviour = _read_behaviour(reader, doc.get("behaviour"))
    lesions = _read_lesions(reader, doc.get("lesions"))
    reference = reader.string(doc.get("reference_cohort"), "reference_cohort") if "reference_cohort" in doc else None
    output_dir = reader.string(doc.get("output_dir"), "output_dir") if "output_dir" in doc else None
    model = settings_from_mapping(ModelSettings, reader.mapping(doc.get("model"), "model"), reader, "model")
    options = settings_from_mapping(Options, reader.mapping(doc.get("options"), "options"), reader, "options")
    demo = _read_demo(reader, doc.get("demo"), read_demo)
    missing_values = _read_missing_values(reader, doc.get("missing_values", []))
    gnsm = read_gnsm(reader, doc.get("gnsm"), _reserved_columns(subjects))
    if model.n_scales < 1:
        reader.problem("model.n_scales", "a positive number of noise scales", str(model.n_scales))
    if model.min_train_subjects < 1:
        reader.problem("model.min_train_subjects", "a positive count", str(model.min_train_subjects))
    if model.patch_size < 1 or model.patch_size % 2 == 0:
        reader.problem("model.patch_size", "an odd positive patch edge in voxels (1, 3, 5, ...)", str(model.patch_size))

    if reader.problems:
        raise ManifestError(reader.problems)

    def p(value: str) -> Path:
        return resolve_path(root, value)

    manifest = Manifest(
        path=path.resolve(),
        root=root,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        study_name=study_name,
        template=TemplateSpec(image=p(template["image"]), brain_mask=p(template["brain_mask"])),
        atlas=AtlasSpec(name=atlas.get("name", "atlas"), image=p(atlas["image"]), labels=p(atlas["labels"])),
        subjects=SubjectsSpec(
            table=p(subjects["table"]),
            images=types.MappingProxyType(dict(subjects["images"])),
            **{k: subjects[k] for k in _SUBJECT_COLUMNS if k in subjects},
            covariates=(
                types.MappingProxyType(dict(subjects["covariates"])) if subjects.get("covariates") is not None
                else None
            ),
        ),
        reference_cohort=reference,
        output_dir=p(output_dir),
        behaviour=(
            BehaviourSpec(
                table=p(behaviour["table"]),
                scores=behaviour["scores"],
                id_column=behaviour.get("id_column", "subject_id"),
            )
            if behaviour
            else None
        ),
        lesions=(
            LesionsSpec(
                table=p(lesions["table"]),
                **{k: lesions[k] for k in ("id_column", "mask_column", "group_column") if k in lesions},
            )
            if lesions
            else None
        ),
        model=model,
        options=options,
        demo=demo,
        missing_values=missing_values,
        gnsm=gnsm,
    )
    _check_containment(manifest, reader, template, atlas, subjects, behaviour, output_dir)
    if lesions:
        check_inside(manifest, lesions["table"], "lesions.table", reader.problems, file=reader.file)
    if demo is not None:
        _check_demo_folder(manifest, reader)
    if reader.problems:
        raise ManifestError(reader.problems)
    return manifest


_SUBJECT_COLUMNS = ("id_column", "cohort_column", "split_column", "sex_column", "age_column")


def _read_template(reader: FieldReader, value) -> dict:
    section = reader.mapping(value, "template") or {}
    reader.check_keys(section, {"image": True, "brain_mask": True}, "template")
    return {k: reader.string(section[k], f"template.{k}") for k in ("image", "brain_mask") if k in section}


def _read_atlas(reader: FieldReader, value) -> dict:
    section = reader.mapping(value, "atlas") or {}
    reader.check_keys(section, {"name": False, "image": True, "labels": True}, "atlas")
    return {k: reader.string(section[k], f"atlas.{k}") for k in ("name", "image", "labels") if k in section}


def _read_subjects(reader: FieldReader, value) -> dict:
    section = reader.mapping(value, "subjects") or {}
    allowed = {"table": True, "images": True, "covariates": False, **{k: False for k in _SUBJECT_COLUMNS}}
    reader.check_keys(section, allowed, "subjects")
    out = {k: reader.string(section[k], f"subjects.{k}") for k in ("table", *_SUBJECT_COLUMNS) if k in section}
    images = reader.mapping(section.get("images"), "subjects.images")
    if "images" in section and images is not None:
        if not images:
            reader.problem("subjects.images", "at least one modality: column pair (e.g. T1w: t1_path)", "none")
        for modality, column in images.items():
            reader.string(column, f"subjects.images.{modality}")
        out["images"] = {str(k): str(v) for k, v in images.items()}
    if "covariates" in section:
        out["covariates"] = _read_covariates(reader, section["covariates"], _reserved_columns(out))
    return out


def _reserved_columns(subjects: dict) -> dict[str, str]:
    """Column -> the field naming it, for the columns that say who a subject is and where its images are: a
    covariate or a GNSM column is a property of the subject and cannot be one of them."""
    reserved = {subjects.get(k, getattr(SubjectsSpec, k)): f"subjects.{k}" for k in ("id_column", "cohort_column",
                                                                                     "split_column")}
    reserved.update({c: f"subjects.images.{m}" for m, c in subjects.get("images", {}).items()})
    return reserved


def _read_covariates(reader: FieldReader, value, reserved: Mapping[str, str]) -> dict[str, str | None] | None:
    """``subjects.covariates``: a list of columns (kinds read from the data) or a mapping column -> kind."""
    where = "subjects.covariates"
    if isinstance(value, list):
        names = [v for v in value if isinstance(v, str) and v.strip()]
        if len(names) != len(value):
            reader.problem(where, "a list of column names of the subjects table", describe(value))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            reader.problem(where, "each covariate listed once", f"repeated {dupes}")
        covariates = dict.fromkeys(names)
    elif isinstance(value, Mapping):
        covariates = {}
        for name, kind in value.items():
            if kind not in COVARIATE_KINDS:
                reader.problem(f"{where}.{name}", "numeric or categorical", describe(kind))
            covariates[str(name)] = kind
    else:
        reader.problem(
            where,
            "a list of column names, or a mapping of column names to numeric or categorical (e.g. "
            "{age: numeric, site: categorical}); [] for none",
            describe(value),
        )
        return None
    for name in covariates:
        if name in reserved:
            reader.problem(where, "columns that describe the subject (not its id, cohort, split or image path)",
                           f"'{name}', the {reserved[name]} column")
    return covariates


def _read_missing_values(reader: FieldReader, value) -> tuple[str | int | float, ...]:
    """``missing_values``: the study's own markers of a missing value (numbers or non-empty strings)."""

    def is_marker(v) -> bool:
        if isinstance(v, str):
            return bool(v.strip())
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if value is None:  # the key written without a value
        return ()
    if not isinstance(value, list) or not all(is_marker(v) for v in value):
        reader.problem(
            "missing_values",
            "a list of the cell values that mean missing in this study's tables, numbers or non-empty strings "
            "(e.g. [-1, -999, unknown])",
            describe(value),
        )
        return ()
    return tuple(value)


def _read_behaviour(reader: FieldReader, value) -> dict | None:
    section = reader.mapping(value, "behaviour")
    if section is None:
        return None
    reader.check_keys(section, {"table": True, "id_column": False, "scores": False}, "behaviour")
    out = {k: reader.string(section[k], f"behaviour.{k}") for k in ("table", "id_column") if k in section}
    scores = section.get("scores", "all")
    if scores == "all":
        out["scores"] = None
    elif isinstance(scores, list) and scores and all(isinstance(s, str) and s for s in scores):
        dupes = sorted({s for s in scores if scores.count(s) > 1})
        if dupes:
            reader.problem("behaviour.scores", "each score column listed once", f"repeated {dupes}")
        out["scores"] = tuple(scores)
    else:
        reader.problem("behaviour.scores", "a non-empty list of column names, or 'all'", describe(scores))
    return out


def _read_lesions(reader: FieldReader, value) -> dict | None:
    section = reader.mapping(value, "lesions")
    if section is None:
        return None
    keys = ("table", "id_column", "mask_column", "group_column")
    reader.check_keys(section, {"table": True, "id_column": False, "mask_column": False, "group_column": False},
                      "lesions")
    return {k: reader.string(section[k], f"lesions.{k}") for k in keys if k in section}


def _read_demo(reader: FieldReader, value, read_settings: SettingsReader | None) -> DemoBlock | None:
    """The block's folder, checked here because the study resolves it; the settings go to ``read_settings``."""
    section = reader.mapping(value, "demo")
    if section is None:
        return None
    if read_settings is not None:
        read_settings(section, reader)
    folder = section.get("folder", DEFAULT_DEMO_FOLDER)
    if not isinstance(folder, str):
        reader.problem("demo.folder", "a value of type str", describe(folder))
    elif not folder.strip():
        reader.problem("demo.folder", "a folder name", "an empty string")
    return DemoBlock(folder=folder, settings=types.MappingProxyType(dict(section)))


def _check_containment(manifest: Manifest, reader: FieldReader, template, atlas, subjects, behaviour, output_dir):
    if manifest.options.allow_paths_outside:
        return
    written = {
        "template.image": template["image"],
        "template.brain_mask": template["brain_mask"],
        "atlas.image": atlas["image"],
        "atlas.labels": atlas["labels"],
        "subjects.table": subjects["table"],
        "output_dir": output_dir,
    }
    if behaviour:
        written["behaviour.table"] = behaviour["table"]
    for field_name, value in written.items():
        check_inside(manifest, value, field_name, reader.problems, file=reader.file)


def _check_demo_folder(manifest: Manifest, reader: FieldReader) -> None:
    """The demo folder is replaced on every rebuild: it must not hold the manifest or the runs."""
    folder = os.path.realpath(manifest.resolve(manifest.demo.folder))
    root = os.path.realpath(manifest.root)
    if os.path.commonpath([folder, root]) == folder:
        reader.problem(
            "demo.folder",
            "a sub-folder of the manifest's folder (it is replaced whenever the demo is rebuilt)",
            f"'{manifest.demo.folder}', which contains the manifest",
        )
    else:
        check_inside(manifest, manifest.demo.folder, "demo.folder", reader.problems, file=reader.file)
    output = os.path.realpath(manifest.output_dir)
    if os.path.commonpath([folder, output]) == folder:
        reader.problem(
            "output_dir",
            f"a folder outside demo.folder '{manifest.demo.folder}' (which is replaced when the demo is rebuilt)",
            f"'{os.path.relpath(manifest.output_dir, manifest.root)}'",
        )


def check_inside(manifest: Manifest, value: str, field_name: str, problems: list[Problem], file: str) -> bool:
    """Append a problem when ``value`` leaves the manifest's folder and the manifest does not allow it."""
    if manifest.options.allow_paths_outside:
        return True
    if path_escapes(manifest.root, manifest.resolve(value)):
        problems.append(
            Problem(
                file,
                field_name,
                f"a path inside the manifest's folder {manifest.root} (or options.allow_paths_outside: true)",
                f"'{value}', which leads to {os.path.realpath(manifest.resolve(value))}",
            )
        )
        return False
    return True
