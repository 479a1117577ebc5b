"""optimize on digits-cnn with a small space: choice, budget, resume, report files."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from html.parser import HTMLParser

import pytest

import wattwise
from tests.browser import chromium_path, decoded_images, screenshot
from tests.cli.run_cli import assert_one_line_error, run_in_process
from wattwise.compress.variant import load_variant

SPACE = """
families:
  - name: casts
    candidates:
      - {steps: [{cast: {method: bf16}}], backend: eager}
  - name: unstructured
    candidates:
      - {steps: [{prune: {method: unstructured, sparsity: 0.3}}], backend: eager}
      - {steps: [{prune: {method: unstructured, sparsity: 0.97}}], backend: eager}
      - {steps: [{prune: {method: unstructured, sparsity: 0.99}}], backend: eager}
peers: false
"""


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    directory = tmp_path_factory.mktemp("optimize")
    space = directory / "space.yaml"
    space.write_text(SPACE)
    # Size is a deterministic objective, so the choice does not depend on timing noise.
    result = wattwise.optimize(
        "digits-cnn",
        budget="accuracy_drop<=0.02",
        objective="size",
        batch_size=64,
        space=str(space),
        out=directory / "report",
        time_limit_s=3600,  # never the limit: the test checks choices, not speed
    )
    return result, directory


def test_chosen_variant_meets_budget_when_rescored_independently(search):
    result, directory = search
    assert result.chosen is not None and result.exit_code == 0
    original = wattwise.load_model("digits-cnn")
    chosen = load_variant(directory / "report" / "variant", check_outputs=True)
    budget = result.budget
    before = original.task.evaluate(original.module, "test").metrics
    after = chosen.task.evaluate(chosen.module, "test").metrics
    assert budget.met(before, after)


def test_family_stops_after_a_milder_setting_breaks_budget(search):
    result, _ = search
    by_label = {
        r.recipe["steps"][0]["prune"]["sparsity"]: r
        for r in result.candidates
        if r.family == "unstructured"
    }
    assert by_label[0.97].status == "measured" and not by_label[0.97].within_budget
    assert by_label[0.99].status == "skipped"


def test_front_is_non_dominated(search):
    result, _ = search
    members = {r.id: r for r in [result.baseline, *result.candidates] if r.status == "measured"}
    for front_id in result.front:
        a = members[front_id]
        for b in members.values():
            if b.id == a.id:
                continue
            better_quality = -b.budget_value >= -a.budget_value
            assert not (better_quality and b.cost < a.cost and -b.budget_value > -a.budget_value)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_report_files_and_embedded_images_load(search):
    result, directory = search
    report = directory / "report"
    data = json.loads((report / "report.json").read_text())
    assert data["chosen"]["id"] == result.chosen.id
    assert "## Energy and carbon per 1M inferences" in (report / "report.md").read_text()
    parser = _Images()
    parser.feed((report / "index.html").read_text())
    assert len(parser.sources) == 3
    for source in parser.sources:
        png = base64.b64decode(re.sub("^data:image/png;base64,", "", source))
        assert png.startswith(b"\x89PNG") and len(png) > 5000


@pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (make test installs it)"
)
def test_report_renders_non_blank_in_headless_chromium_with_every_image_decoded(search, tmp_path):
    import numpy as np
    from PIL import Image

    _, directory = search
    page = directory / "report" / "index.html"
    decoded, total = decoded_images(page, tmp_path)
    assert total == 3 and decoded == total, f"{decoded} of {total} images decoded"
    image = np.asarray(Image.open(screenshot(page, tmp_path / "shot.png")).convert("L"))
    # Not blank: a white page has one value; text, tables and plots spread them.
    assert image.std() > 10 and image.max() - image.min() > 100
    assert (image < 128).mean() > 0.005  # some dark ink (text, axes) on the page


def test_resume_does_not_remeasure(search):
    result, directory = search
    before = (directory / "report" / "search_state.json").read_text()
    again = wattwise.optimize(
        "digits-cnn",
        budget="accuracy_drop<=0.02",
        objective="size",
        batch_size=64,
        space=str(directory / "space.yaml"),
        out=directory / "report",
        time_limit_s=3600,  # never the limit: the test checks choices, not speed
        resume=True,
    )
    assert again.chosen.id == result.chosen.id
    old = {
        r["id"]: r["seconds"] for r in json.loads(before)["results"] if r["status"] == "measured"
    }
    new = {r.id: r.seconds for r in again.candidates if r.status == "measured"}
    assert old == new  # same timings: nothing was measured again


def test_impossible_budget_exits_3(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "families:\n  - name: c\n    candidates:\n"
        "      - {steps: [{cast: {method: bf16}}], backend: eager}\npeers: false\n"
    )
    done = run_in_process(
        "optimize",
        "digits-cnn",
        "--budget",
        "accuracy>=1.01",
        "--space",
        str(space),
        "--out",
        str(tmp_path / "r"),
        "--objective",
        "size",
    )
    assert done.returncode == 3, done.stderr[-1500:]
    assert "No candidate met the budget" in (tmp_path / "r" / "report.md").read_text()


def test_bad_budget_and_objective_exit_2(tmp_path):
    assert_one_line_error(
        run_in_process("optimize", "digits-cnn", "--budget", "accuracy<<1", "--out", str(tmp_path)),
        "bad budget",
    )
    assert_one_line_error(
        run_in_process("optimize", "digits-cnn", "--objective", "cheap", "--out", str(tmp_path)),
        "unknown objective",
    )


def test_ctrl_c_keeps_a_marked_partial_report(tmp_path):
    import os
    import signal
    import time

    from tests.cli.run_cli import REPO, WATTWISE

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "r"
    process = subprocess.Popen(
        [
            str(WATTWISE),
            "optimize",
            "digits-cnn",
            "--space",
            str(space),
            "--out",
            str(out),
            "--objective",
            "size",
            "--budget",
            "accuracy_drop<=0.02",
            "--time-limit",
            "3600s",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupt once the baseline is measured, however long that takes here (a finished
    # search could not be interrupted, so a large space keeps it busy meanwhile).
    state = out / "search_state.json"
    while process.poll() is None and not (state.is_file() and '"baseline": {' in state.read_text()):
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=600)
    assert process.returncode == 130
    assert (out / "report.md").read_text().startswith("> **PARTIAL REPORT**")
    assert "PARTIAL REPORT" in (out / "index.html").read_text()
    leftovers = [p for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert not leftovers and not os.path.exists(out / "variant")
