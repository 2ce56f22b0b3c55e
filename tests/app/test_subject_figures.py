"""The subject view's figures (app.figures.subject) through ``fig.to_dict()``, against the numbers of
analysis.exploration.subject on a synthetic published run."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.subject import CHART_CENTILES, centile_chart, subject_story
from analysis.runs.reader import open_run
from app.figures.subject import (
    LABEL_GAP,
    centile_figure,
    centile_method,
    norm_profile_figure,
    spread_labels,
    top_roi_columns,
    top_roi_figure,
    top_roi_rows,
)
from app.style import OKABE_ITO, REST_COLOR, cohort_styles


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(write_synthetic_study(tmp_path_factory.mktemp("subject_figures") / "study", 160, seed=4))


@pytest.fixture(scope="module")
def story(run):
    return subject_story(run, run.cohort_ids("down_syndrome")[0])


@pytest.fixture(scope="module")
def style(run, story):
    return cohort_styles(run.cohorts)[story.cohort]


def _array(value) -> np.ndarray:
    """A figure array as the browser receives it: plotly serialises numpy arrays as base64 typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).reshape(shape)
    return np.asarray(value)


def _trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


def _readable_at_small_size(fig: dict) -> None:
    """Titled, both axes titled, the legend in the bottom margin (under the plot, never over a line)."""
    layout = fig["layout"]
    assert layout["title"]["text"]
    assert layout["xaxis"]["title"]["text"] and layout["yaxis"]["title"]["text"]
    legend = layout["legend"]
    assert legend["orientation"] == "h" and legend["yref"] == "container" and legend["yanchor"] == "bottom"
    assert legend["y"] < 0.05 and layout["margin"]["b"] >= 70


def test_the_profile_figure_draws_the_subject_its_band_and_its_bmu(run, story, style):
    profile = story.profile
    fig = norm_profile_figure(profile, style, story.subject_id, story.cohort, run.reference_cohort).to_dict()
    _readable_at_small_size(fig)
    n_scales = run.score_norms.shape[1]
    subject = _trace(fig, story.subject_id)
    np.testing.assert_array_equal(_array(subject["x"]), np.arange(1, n_scales + 1))
    np.testing.assert_allclose(_array(subject["y"]), profile.subject)
    assert subject["line"]["color"] == subject["marker"]["color"] == style.color
    assert subject["marker"]["symbol"] == style.symbol
    outside = np.zeros(n_scales, dtype=bool)
    outside[np.asarray(profile.outside_scales, dtype=int) - 1] = True
    np.testing.assert_array_equal(_array(subject["marker"]["size"]) > 6, outside)
    bmu = _trace(fig, f"BMU ({profile.bmu[0]}, {profile.bmu[1]})")
    np.testing.assert_allclose(_array(bmu["y"]), run.som.weights[profile.bmu])
    band = _trace(fig, f"{run.reference_cohort} 5–95 % (n = {len(run.reference_ids)})")
    assert band["fill"] == "tonexty"
    lower = fig["data"][fig["data"].index(band) - 1]
    np.testing.assert_allclose(_array(lower["y"]), profile.lower)
    np.testing.assert_allclose(_array(band["y"]), profile.upper)
    median = _trace(fig, f"{run.reference_cohort} median")
    assert median["line"]["dash"] == "dash"
    np.testing.assert_allclose(_array(median["y"]), profile.median)
    assert fig["layout"]["xaxis"]["title"]["text"] == "noise scale (1 = smallest σ)"
    assert fig["layout"]["yaxis"]["title"]["text"] == "log score norm (reference z)"
    assert f"{len(profile.outside_scales)} of {n_scales} scales outside" in fig["layout"]["title"]["text"]


def test_the_profile_hover_names_each_scales_sigma_when_the_run_recorded_them(run, story, style):
    sigmas = np.geomspace(0.01, 1.0, run.score_norms.shape[1])
    fig = norm_profile_figure(story.profile, style, story.subject_id, story.cohort, run.reference_cohort,
                              sigmas).to_dict()
    text = _trace(fig, story.subject_id)["text"]
    assert text[0].startswith("scale 1 (σ = 0.01): z = ") and "σ = 1)" in text[-1]


def test_the_centile_chart_draws_the_curves_the_reference_and_the_subject(run, story, style):
    chart = story.chart
    fig = centile_figure(chart, style, story.subject_id, story.cohort, run.reference_cohort, story.detector_name,
                         story.detector_unit).to_dict()
    _readable_at_small_size(fig)
    assert fig["layout"]["xaxis"]["title"]["text"] == "age (years)"
    assert fig["layout"]["yaxis"]["title"]["text"] == "MSMA GMM<br>(NLL, nats)"
    for k, centile in enumerate(CHART_CENTILES):
        curve = _trace(fig, f"{centile:g} % centile")
        np.testing.assert_allclose(_array(curve["x"]), chart.age_grid)
        np.testing.assert_allclose(_array(curve["y"]), chart.curves[:, k])
    labels = [a["text"] for a in fig["layout"]["annotations"]]
    assert labels == [f"{c:g} %" for c in CHART_CENTILES]
    heights = np.array([a["y"] for a in fig["layout"]["annotations"]])
    drawn = np.concatenate([chart.reference_scores, chart.curves[-1], [chart.subject_score]])
    assert (np.diff(heights) >= LABEL_GAP * np.ptp(drawn) - 1e-9).all()  # never on top of each other
    assert heights.mean() == pytest.approx(chart.curves[-1].mean())
    reference = _trace(fig, f"{run.reference_cohort} (n = {len(run.reference_ids)})")
    np.testing.assert_allclose(np.sort(_array(reference["y"])), np.sort(chart.reference_scores))
    assert reference["marker"]["color"] == REST_COLOR and reference["marker"]["opacity"] < 0.5
    subject = _trace(fig, f"{story.subject_id} ({story.cohort})")
    assert list(_array(subject["x"])) == [chart.subject_age] and list(_array(subject["y"])) == [chart.subject_score]
    assert subject["marker"]["color"] == style.color and subject["marker"]["symbol"] == style.symbol
    assert subject["marker"]["size"] >= 14
    title = fig["layout"]["title"]["text"]
    assert title.startswith(f"{story.subject_id}: ") and f"of MSMA GMM at age {chart.subject_age:g}" in title
    if chart.beyond is None:
        assert f"{round(chart.subject_centile)}" in title
    method = centile_method(chart, run.reference_cohort)
    assert fig["layout"]["title"]["subtitle"]["text"].replace("<br>", " ") == method
    assert f"{len(run.reference_ids)} {run.reference_cohort} subjects" in method


def test_a_chart_without_ages_shows_the_reference_distribution_and_says_so(run, story, style):
    held_out = run.subjects.index.isin(run.reference_ids)
    scores = run.detector_scores["msma_gmm"].to_numpy(dtype=float)
    chart = centile_chart(scores, held_out, run.row_of[story.subject_id])  # no ages at all
    fig = centile_figure(chart, style, story.subject_id, story.cohort, run.reference_cohort, "MSMA GMM",
                         "NLL, nats").to_dict()
    assert "(without age)" in fig["layout"]["title"]["text"]
    assert "no reference ages" in fig["layout"]["title"]["subtitle"]["text"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "reference distribution (no age)"
    median = _trace(fig, "50 % centile")
    np.testing.assert_allclose(_array(median["y"]), np.quantile(scores[held_out], 0.5, method="inverted_cdf"))


def test_a_subject_without_a_score_gets_an_honest_empty_chart(run, story, style):
    scores = run.detector_scores["msma_gmm"].to_numpy(dtype=float).copy()
    row = run.row_of[story.subject_id]
    scores[row] = np.nan
    chart = centile_chart(scores, run.subjects.index.isin(run.reference_ids), row, run.subjects["age"].to_numpy())
    fig = centile_figure(chart, style, story.subject_id, story.cohort, run.reference_cohort, "MSMA GMM",
                         "NLL, nats").to_dict()
    assert fig["layout"]["xaxis"]["visible"] is False
    assert "has no MSMA GMM score" in fig["layout"]["annotations"][0]["text"]


def test_the_top_roi_rows_are_the_analysis_numbers_as_json(story):
    rows = top_roi_rows(story.rois)
    assert [r["roi"] for r in rows] == story.rois["roi"].tolist()
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    np.testing.assert_allclose([r["value"] for r in rows], story.rois["value"])
    np.testing.assert_allclose([r["percentile"] for r in rows], story.rois["percentile"])
    gap = pd.DataFrame({"roi": ["a"], "value": [np.nan], "percentile": [np.nan], "reference_z": [np.nan]})
    assert top_roi_rows(gap) == [{"rank": 1, "roi": "a", "value": None, "percentile": None}]
    json.dumps(rows, allow_nan=False)
    columns = top_roi_columns(story.roi_unit)
    assert [c["field"] for c in columns] == ["rank", "roi", "value", "percentile"]
    assert columns[2]["headerName"] == "score (z vs normative prediction)"


def test_the_top_roi_table_figure_and_its_empty_state(story):
    fig = top_roi_figure(story.rois, story.subject_id, story.roi_unit, story.roi_scores).to_dict()
    table = fig["data"][0]
    assert table["type"] == "table" and list(table["cells"]["values"][1]) == story.rois["roi"].tolist()
    assert list(table["cells"]["values"][3]) == [f"{p:.0f}" for p in story.rois["percentile"]]
    assert table["header"]["values"][2] == "score<br>(z vs normative prediction)"
    assert "adjusted scores" in fig["layout"]["title"]["text"]
    empty = top_roi_figure(story.rois.iloc[:0], story.subject_id, story.roi_unit, "raw").to_dict()
    assert "has no raw ROI scores" in empty["layout"]["annotations"][0]["text"]


def test_the_figures_use_only_colour_blind_safe_colours(run, story, style):
    figs = [norm_profile_figure(story.profile, style, story.subject_id, story.cohort, run.reference_cohort),
            centile_figure(story.chart, style, story.subject_id, story.cohort, run.reference_cohort,
                           story.detector_name, story.detector_unit)]
    allowed = {*OKABE_ITO, REST_COLOR, "#000000"}
    for fig in figs:
        for trace in fig.to_dict()["data"]:
            for colour in (trace.get("line", {}).get("color"), trace.get("marker", {}).get("color")):
                assert colour is None or colour in allowed


def test_curve_labels_spread_apart_only_when_they_would_touch():
    np.testing.assert_allclose(spread_labels(np.array([0.0, 5.0, 10.0]), 1.0), [0.0, 5.0, 10.0])
    placed = spread_labels(np.array([0.0, 0.1, 0.2, 3.0]), 1.0)
    np.testing.assert_allclose(np.diff(placed)[:2], [1.0, 1.0])
    assert placed.mean() == pytest.approx(0.825)


def test_the_method_line_names_the_design_the_held_out_loss_chose():
    rng = np.random.default_rng(0)
    age = rng.uniform(6, 16, 121)
    trend = centile_chart(0.5 * age + rng.normal(0, 1, 121), np.ones(121, dtype=bool), 0, ages=age)
    assert centile_method(trend, "typical") == "centiles: quantile regression linear in age, 121 typical subjects"
    flat = centile_chart(rng.normal(0, 1, 121), np.ones(121, dtype=bool), 0, ages=age)
    assert centile_method(flat, "typical") == ("centiles: age-independent quantiles (an age trend did not lower the "
                                               "held-out pinball loss), 121 typical subjects")
