"""`dlcli report RUN`: one self-contained HTML file of a run, rebuilt to the same bytes, and
the bad inputs (not a run, --out into a missing folder or over a file of the run)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.report import REPORT_FILE, build_report, config_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-epoch run of the quick synthetic config, with an evaluation's confusion matrix."""
    runs = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(ROOT / "configs" / "synthetic_quick.yaml"),
            "--runs-dir",
            str(runs),
            "--set",
            "training.epochs=2",
            "--set",
            "device=cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    evaluated = CliRunner().invoke(app, ["evaluate", str(folder)])
    assert evaluated.exit_code == 0, evaluated.output
    return folder


class _Page(HTMLParser):
    """The tags, image sources and alt texts, and every URL-like attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        for name in ("src", "href", "action", "poster", "data"):
            if attrs.get(name):
                self.urls.append(attrs[name])


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _without_generated_line(text: str) -> str:
    lines = text.splitlines()
    stamped = [line for line in lines if line.startswith('<p class="generated">')]
    assert len(stamped) == 1
    return "\n".join(line for line in lines if not line.startswith('<p class="generated">'))


def test_report_of_a_run_is_self_contained(run_dir):
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = (run_dir / REPORT_FILE).read_text(encoding="utf-8")
    page = _parse(text)
    # real structure: headings and tables; no script, no external resource of any kind
    assert "h1" in page.tags and page.tags.count("h2") >= 6 and "table" in page.tags and "caption" in page.tags
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(url.startswith("data:image/png;base64,") for url in page.urls), page.urls
    assert not re.search(r"https?://|//cdn|@import|url\(", text)
    assert "@media print" in text
    # every image has alt text and is a PNG that decodes
    assert len(page.images) >= 3  # loss, accuracy, confusion matrix
    for img in page.images:
        assert img.get("alt", "").strip()
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    # what it says
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    for words in (
        "synthetic_quick",
        "completed",
        "test_accuracy",
        "Training curves",
        "Confusion matrix",
        "Layers (as dlcli summary)",
        "Environment",
        "Timings",
        "Files of the run folder",
        "metrics.csv",
        "checkpoints/best.pt",
        info["torch"],
        info["python"],
        "fp32",
    ):
        assert words in text, words
    assert len(text.encode("utf-8")) < 2_000_000


def test_what_differs_from_the_defaults_is_marked(run_dir):
    text = build_report(run_dir, generated_at="then")
    rows = re.findall(r'<tr class="changed"><td>([^<]+)</td>', text)
    # the config sets these (synthetic_quick.yaml and --set training.epochs=2)
    for key in ("name", "training.epochs", "optimizer.lr", "data.dataset", "model.hidden"):
        assert key in rows, (key, rows)
    # and leaves these at their defaults
    for key in ("training.shuffle", "optimizer.momentum", "training.precision"):
        assert key not in rows
        assert f"<td>{key}</td>" in text


def test_config_rows_cover_layers(tmp_path):
    from dlcli.config import load_config

    config = load_config(ROOT / "configs" / "mnist_cnn.yaml")
    keys = {key: (value, default) for key, value, default in config_rows(config)}
    assert keys["model.layers.0.conv2d.filters"][0] == 32
    assert keys["training.shuffle"] == (True, True)


def test_rebuilding_gives_the_same_bytes_but_the_generated_line(run_dir, tmp_path):
    first = build_report(run_dir, generated_at="2026-01-01T00:00:00+0000")
    second = build_report(run_dir, generated_at="2026-01-01T00:00:00+0000")
    assert first == second
    out = tmp_path / "elsewhere" / "r.html"  # a folder that does not exist yet is created
    assert CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)]).exit_code == 0
    assert CliRunner().invoke(app, ["report", str(run_dir)]).exit_code == 0  # its own file: replaced
    assert _without_generated_line(out.read_text(encoding="utf-8")) == _without_generated_line(
        (run_dir / REPORT_FILE).read_text(encoding="utf-8")
    )


def test_report_draws_the_curves_when_the_run_has_no_pngs(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.png", "checkpoints", REPORT_FILE))
    page = _parse(build_report(copy))
    assert len(page.images) == 2  # loss and accuracy, drawn from metrics.csv


def test_a_running_run_is_marked_as_such(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", REPORT_FILE))
    info = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    info.update(status="running", host="another-host")  # another machine's run: not checked for its process
    (copy / "run.json").write_text(json.dumps(info), encoding="utf-8")
    assert "still training when the report was made" in build_report(copy)


# ----------------------------------------------------------------------------- bad input: exit 2, one paragraph


def _fails(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ")
    return result.output


def test_a_folder_that_is_not_a_run(tmp_path):
    assert "is not a run folder" in _fails(["report", str(tmp_path)])
    assert "no such folder" in _fails(["report", str(tmp_path / "missing")])
    (tmp_path / "config.yaml").write_text("name: x\n", encoding="utf-8")  # a config, but no run.json
    assert "no run.json" in _fails(["report", str(tmp_path)])


def test_out_over_a_file_of_the_run_is_refused(run_dir):
    before = (run_dir / "metrics.csv").read_bytes()
    message = _fails(["report", str(run_dir), "--out", str(run_dir / "metrics.csv"), "--force"])
    assert "inside the run folder" in message
    assert (run_dir / "metrics.csv").read_bytes() == before
    assert "inside the run folder" in _fails(["report", str(run_dir), "--out", str(run_dir / "notes" / "r.html")])


def test_out_over_a_users_file_needs_force(run_dir, tmp_path):
    mine = tmp_path / "mine.html"
    mine.write_text("<p>mine</p>\n", encoding="utf-8")
    assert "not written by dlcli" in _fails(["report", str(run_dir), "--out", str(mine)])
    assert mine.read_text(encoding="utf-8") == "<p>mine</p>\n"
    assert CliRunner().invoke(app, ["report", str(run_dir), "--out", str(mine), "--force"]).exit_code == 0


# ----------------------------------------------------------------------------- in a real browser

# Run in a process of its own (offline under `unshare -rn` where it works): opens the report in
# Debian's headless chromium through selenium and prints what the page did as JSON.
_BROWSER_CHECK = r"""
import json, sys
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

options = Options()
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
            "--host-resolver-rules=MAP * ~NOTFOUND"):
    options.add_argument(arg)
options.binary_location = sys.argv[2]
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(sys.argv[3]), options=options)
try:
    driver.get("file://" + sys.argv[1])
    page = driver.execute_script(
        "return {images: [...document.images].map(i => [i.complete, i.naturalWidth, i.alt]),"
        " resources: performance.getEntriesByType('resource').map(r => r.name),"
        " headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent),"
        " tables: document.querySelectorAll('table').length}"
    )
    page["console"] = [entry["message"] for entry in driver.get_log("browser")]
    driver.save_screenshot(sys.argv[4])
finally:
    driver.quit()
print(json.dumps(page))
"""


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (chromium, driver) if chromium and driver else None


def _offline_prefix() -> list[str]:
    """`unshare -rn` with the loopback up (chromedriver talks to selenium through it), where allowed."""
    import subprocess

    if shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    return []


def test_report_in_a_headless_browser_offline(run_dir, tmp_path):
    import os
    import subprocess
    import sys

    found = _browser()
    if found is None:
        message = (
            "the browser check needs chromium, chromedriver (apt-get install chromium chromium-driver) and selenium"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: .ci/run installs them)")
        pytest.skip(message)
    report = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["report", str(run_dir), "--out", str(report)]).exit_code == 0
    shot = tmp_path / "first-screen.png"
    command = [*_offline_prefix(), sys.executable, "-c", _BROWSER_CHECK, str(report), *found, str(shot)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert page["console"] == []
    assert page["resources"] == []  # nothing fetched: everything is in the file
    assert len(page["images"]) >= 3 and all(complete and width > 0 and alt for complete, width, alt in page["images"])
    assert page["headings"][0] == "synthetic_quick" and "Configuration" in page["headings"]
    assert page["tables"] >= 6
    assert shot.read_bytes().startswith(b"\x89PNG")
