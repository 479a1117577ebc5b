"""Render an HTML file in headless Chromium: a screenshot, and which <img> elements decoded.

Flags from ../shared/FIELD-NOTES.md: no sandbox (root in containers), no GPU, and nothing that
reaches the network (background networking, component updates, sync, QUIC); a fresh profile
directory per run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
MARKER_ID = "wattwise-image-check"
# Runs after every image loaded or failed: writes "decoded/total" into the DOM for --dump-dom.
CHECK_SCRIPT = f"""
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const decoded = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const marker = document.createElement("div");
  marker.id = "{MARKER_ID}";
  marker.textContent = decoded + "/" + images.length;
  document.body.appendChild(marker);
}});
</script>
"""


def chromium_path() -> str | None:
    """The chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout_s: float = 300) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="wattwise-chromium-") as profile:
        return subprocess.run(
            [chromium_path(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


def decoded_images(html: Path, work_dir: Path) -> tuple[int, int]:
    """(images decoded, images in the page) after the page's load event, read with --dump-dom."""
    page = work_dir / "checked.html"
    text = html.read_text()
    page.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>", 1))
    done = _run(["--virtual-time-budget=10000", "--dump-dom", page.as_uri()])
    found = re.search(rf'id="{MARKER_ID}">(\d+)/(\d+)<', done.stdout)
    assert found, f"no image check in the rendered DOM; chromium said: {done.stderr[-1500:]}"
    return int(found.group(1)), int(found.group(2))


def screenshot(html: Path, shot: Path, width: int = 1200, height: int = 2400) -> Path:
    """A PNG screenshot of the rendered page."""
    done = _run([f"--screenshot={shot}", f"--window-size={width},{height}", html.as_uri()])
    assert shot.is_file(), f"chromium wrote no screenshot: {done.stderr[-1500:]}"
    return shot
