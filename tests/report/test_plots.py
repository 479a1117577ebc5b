"""The Pareto plot stays readable: log cost axis, short ids that do not overlap, a key."""

from __future__ import annotations

import matplotlib.pyplot as plt

from wattwise.report.plots import pareto_figure, pareto_plot, point_ids
from wattwise.search.results import CandidateResult

LONG = "prune unstructured sparsity=0.3 → quantize static (per_channel, minmax, 128 samples)"


def _members() -> list[CandidateResult]:
    rows = [
        ("original", "original (fp32 eager)", "", 1.0, 100.0),
        ("a", "quantize int8_dynamic (per_channel) @ onnxruntime", "", 0.993, 31.0),
        ("b", LONG + " @ onnxruntime", "", 0.990, 31.5),  # nearly on top of "a"
        ("c", "onnxruntime fp32", "", 1.0, 97.0),  # nearly on top of the original
        ("d", "ONNX Runtime defaults", "onnxruntime", 1.0, 99.0),
        ("e", "cast bf16 @ eager", "", 0.97, 2500.0),
    ]
    return [
        CandidateResult(
            id=id_,
            family="f",
            level=0,
            label=label,
            recipe={},
            peer=peer,
            status="measured",
            quality={"fidelity": quality},
            within_budget=quality >= 0.99,
            cost=cost,
        )
        for id_, label, peer, quality, cost in rows
    ]


def _figure(members):
    return pareto_figure(
        members,
        ["a", "original"],
        "fidelity",
        "throughput cost, ms per 1k samples",
        lambda r: r.quality["fidelity"],
        "a",
        0.99,
        "budget fidelity>=0.99",
    )


def test_pareto_plot_has_a_log_cost_axis_short_ids_and_a_key():
    members = _members()
    figure = _figure(members)
    axes, key_axes = figure.axes
    assert axes.get_xscale() == "log"
    ids = point_ids(members)
    assert ids == {"original": "0", "a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
    point_texts = {t.get_text() for t in axes.texts}
    assert set(ids.values()) <= point_texts
    assert not any(LONG[:20] in t for t in point_texts)  # long labels only in the key
    key_text = " ".join(t.get_text() for t in key_axes.texts)
    assert "CHOSEN" in key_text and "prune unstructured" in key_text
    assert "budget fidelity>=0.99" in point_texts
    plt.close(figure)


def test_ids_of_nearby_points_do_not_overlap():
    figure = _figure(_members())
    axes = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in axes.texts if t.get_text().isdigit()]
    for i, first in enumerate(boxes):
        for second in boxes[i + 1 :]:
            assert not first.overlaps(second)
    plt.close(figure)


def test_pareto_plot_renders_a_png():
    assert pareto_plot(*_figure_args()).startswith(b"\x89PNG")


def _figure_args():
    return (_members(), [], "fidelity", "cost", lambda r: r.quality["fidelity"], None, None)
