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
    driver.save_screenshot(sys.argv[4])
    # A sortable table (a sweep's trials): its first column before and after a click on its heading.
    page["sorted"] = driver.execute_script(
        "var t = document.querySelector('table.sortable'); if (!t) { return null; }"
        " var first = () => [...t.tBodies[0].rows].map(r => r.cells[0].textContent);"
        " var before = first(); t.querySelector('thead th button').click(); return [before, first()];"
    )
    page["console"] = [entry["message"] for entry in driver.get_log("browser")]
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


def _open_in_browser(report: Path, shot: Path) -> dict:
    """What the page did in headless chromium, offline where `unshare -rn` works; skipped where
    there is no browser (failing under CI=true, where .ci/run installs one)."""
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
    command = [*_offline_prefix(), sys.executable, "-c", _BROWSER_CHECK, str(report), *found, str(shot)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_report_in_a_headless_browser_offline(run_dir, tmp_path):
    report = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["report", str(run_dir), "--out", str(report)]).exit_code == 0
    shot = tmp_path / "first-screen.png"
    page = _open_in_browser(report, shot)
    assert page["sorted"] is None
    assert page["console"] == []
    assert page["resources"] == []  # nothing fetched: everything is in the file
    assert len(page["images"]) >= 3 and all(complete and width > 0 and alt for complete, width, alt in page["images"])
    assert page["headings"][0] == "synthetic_quick" and "Configuration" in page["headings"]
    assert page["tables"] >= 6
    assert shot.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- evaluate's outputs in a run's report


def _png(path: Path, colour: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1], [0, 1], color=colour)
    fig.savefig(path)
    plt.close(fig)


def test_a_runs_report_shows_evaluates_classification_report_auc_and_worst_mistakes(run_dir, tmp_path):
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", REPORT_FILE))
    evaluation = {  # the shape agreed with dlcli evaluate (scikit-learn's output_dict, and the rest)
        "split": "test",
        "checkpoint": "best",
        "accuracy": 0.75,
        "roc_auc": 0.8125,
        "pr_auc": 0.7031,
        "threshold": 0.42,
        "classification_report": {
            "cat": {"precision": 0.8, "recall": 0.6667, "f1-score": 0.7273, "support": 6},
            "dog": {"precision": 0.7143, "recall": 0.8333, "f1-score": 0.7692, "support": 6},
            "accuracy": 0.75,
            "macro avg": {"precision": 0.7571, "recall": 0.75, "f1-score": 0.7483, "support": 12},
            "weighted avg": {"precision": 0.7571, "recall": 0.75, "f1-score": 0.7483, "support": 12},
        },
        "top_losses": [
            {"index": 7, "source": "dog/3.png", "true": "dog", "predicted": "cat", "probability": 0.91, "loss": 2.41},
            {"index": 2, "source": "cat/9.png", "true": "cat", "predicted": "dog", "probability": 0.77, "loss": 1.47},
        ],
    }
    (copy / "evaluation-test-best.json").write_text(json.dumps(evaluation), encoding="utf-8")
    for name, colour in (("roc.png", "red"), ("pr.png", "blue"), ("top_losses.png", "green")):
        _png(copy / name, colour)
    text = build_report(copy, generated_at="then")
    page = _parse(text)
    assert "<h2>Evaluation</h2>" in text
    for words in (
        '<td>roc_auc</td><td class="num">0.8125</td>',
        '<td>threshold</td><td class="num">0.42</td>',
        "Classification report (evaluation-test-best.json: test split, best checkpoint)",
        '<td>macro avg</td><td class="num">0.7571</td><td class="num">0.75</td><td class="num">0.7483</td>',
        '<td>dog/3.png</td><td>dog</td><td>cat</td><td class="num">0.91</td><td class="num">2.41</td>',
        "The worst mistakes: highest loss first",
    ):
        assert words in text, words
    alts = [img["alt"] for img in page.images]
    assert any(alt.startswith("ROC curve") for alt in alts) and any(alt.startswith("Precision-recall") for alt in alts)
    assert any(alt.startswith("Grid of the test examples") for alt in alts)
    assert not any("roc" in alt and "per epoch" in alt for alt in alts)  # not shown again as a training curve

    regression = {"split": "test", "checkpoint": "last", "mae": 2.5, "rmse": 3.25, "r2": 0.61}
    (copy / "evaluation-test-best.json").write_text(json.dumps(regression), encoding="utf-8")
    _png(copy / "predicted_vs_true.png", "black")
    text = build_report(copy, generated_at="then")
    assert '<td>rmse</td><td class="num">3.25</td>' in text and '<td>r2</td><td class="num">0.61</td>' in text
    assert "Scatter of the predicted against the true value" in text


# ----------------------------------------------------------------------------- sweeps and cross-validations


@pytest.fixture(scope="module")
def sweep_and_cv(tmp_path_factory):
    """A finished 3-trial sweep and a 3-fold cross-validation of the tiny synthetic config, their
    trials real `dlcli train` processes of this checkout."""
    import os

    import yaml

    from conftest import synthetic_config

    root = tmp_path_factory.mktemp("sweeps")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(synthetic_config(epochs=2)), encoding="utf-8")
    # Module-scoped, so pytest's monkeypatch fixture cannot serve; its context manager restores the same way.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setenv("OMP_NUM_THREADS", "1")
        runs = root / "runs"
        swept = CliRunner().invoke(
            app, ["sweep", str(config), "-p", "optimizer.lr=[0.001,0.1,0.01]", "--runs-dir", str(runs), "--id", "s"]
        )
        assert swept.exit_code == 0, swept.output
        crossed = CliRunner().invoke(app, ["cv", str(config), "--folds", "3", "--runs-dir", str(runs), "--id", "c"])
        assert crossed.exit_code == 0, crossed.output
    return runs / "sweeps" / "s", runs / "cv" / "c"


def _trial_column(text: str) -> list[str]:
    body = text.split('<table class="sortable">', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    return re.findall(r'<tr><td class="num">(\d+)</td>', body)


@pytest.mark.e2e
def test_a_sweeps_report_sorts_trials_by_the_objective_and_shows_plots_and_the_best_config(sweep_and_cv, tmp_path):
    from dlcli.report_sweep import build_sweep_report

    sweep, _ = sweep_and_cv
    result = CliRunner().invoke(app, ["report", "s", "--runs-dir", str(sweep.parents[1])])
    assert result.exit_code == 0, result.output
    text = (sweep / REPORT_FILE).read_text(encoding="utf-8")
    page = _parse(text)
    summary = json.loads(CliRunner().invoke(app, ["sweep", "summary", str(sweep), "--json"]).output)
    best_first = [str(t["number"]) for t in summary["trials"]]  # val_loss: lowest first
    assert _trial_column(text) == best_first
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    assert headings == ["Trials", "Objective", "Learning curves, overlaid", "Best config"]
    assert _e_text((sweep / "best.yaml").read_text(encoding="utf-8")) in text
    assert len(page.images) == 3 and all(img["alt"].strip() for img in page.images)  # objective, 2 curve sets
    assert all(url.startswith("data:image/png;base64,") for url in page.urls)
    assert not re.search(r"https?://|//cdn|@import|url\(", text) and "@media print" in text
    assert page.tags.count("script") == 1 and "<script src" not in text  # the one inline sorter
    assert build_sweep_report(sweep, generated_at="x") == build_sweep_report(sweep, generated_at="x")


def _e_text(text: str) -> str:
    import html

    return html.escape(text, quote=True)


@pytest.mark.e2e
def test_a_cross_validations_report_gives_each_fold_and_the_mean_and_standard_deviation(sweep_and_cv):
    from dlcli.report_sweep import build_cv_report

    _, cv = sweep_and_cv
    result = CliRunner().invoke(app, ["report", str(cv)])
    assert result.exit_code == 0, result.output
    text = (cv / REPORT_FILE).read_text(encoding="utf-8")
    summary = json.loads((cv / "summary.json").read_text(encoding="utf-8"))
    for name in ("val_accuracy", "val_loss", "test_accuracy"):
        stats = summary["metrics"][name]
        assert f'<td>{name}</td><td class="num">{stats["mean"]:.6g}</td><td class="num">{stats["std"]:.6g}</td>' in text
    for fold in summary["folds"]:
        assert f"<td>{fold['run']}</td>" in text
        assert f'<td class="num">{fold["metrics"]["val_accuracy"]:.6g}</td>' in text
    assert re.findall(r"<h2>([^<]+)</h2>", text) == [
        "Mean and standard deviation",
        "Folds",
        "Learning curves, overlaid",
    ]
    assert "script" not in _parse(text).tags
    assert build_cv_report(cv, generated_at="x") == build_cv_report(cv, generated_at="x")


@pytest.mark.e2e
def test_sweep_and_cv_reports_in_a_headless_browser_offline(sweep_and_cv, tmp_path):
    sweep, cv = sweep_and_cv
    for folder, sortable in ((sweep, True), (cv, False)):
        report = tmp_path / f"{folder.name}.html"
        assert CliRunner().invoke(app, ["report", str(folder), "--out", str(report)]).exit_code == 0
        shot = tmp_path / f"{folder.name}.png"
        page = _open_in_browser(report, shot)
        assert page["console"] == [] and page["resources"] == []
        assert page["images"] and all(complete and width > 0 and alt for complete, width, alt in page["images"])
        assert shot.read_bytes().startswith(b"\x89PNG")
        if sortable:  # a click on "trial" sorts the trials by number instead of by the objective
            before, after = page["sorted"]
            assert after == sorted(before, key=int)
        else:
            assert page["sorted"] is None


def test_a_folder_that_is_neither_a_run_a_sweep_nor_a_cv(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "summary.csv").write_text("trial\n", encoding="utf-8")
    message = _fails(["report", str(tmp_path / "x")])
    assert "is not a run folder" in message and "sweep" in message and "\n" not in message.strip()


def test_a_report_shows_what_a_real_evaluate_wrote(tmp_path):
    """End to end: a binary table's run, `dlcli evaluate --top-losses`, then its report: the
    classification report, ROC-AUC and PR-AUC as evaluate computed them, the ROC and PR curves
    and the worst mistakes by file and line."""
    runs = tmp_path / "runs"
    trained = CliRunner().invoke(
        app,
        [
            "train", str(ROOT / "configs" / "breast_cancer_binary.yaml"), "--runs-dir", str(runs),
            "--set", "training.epochs=3", "--set", "device=cpu", "-q",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    evaluated = CliRunner().invoke(app, ["evaluate", str(folder), "--top-losses", "3"])
    assert evaluated.exit_code == 0, evaluated.output
    evaluation = json.loads((folder / "evaluation-test-best.json").read_text())
    text = build_report(folder, generated_at="then")
    assert "<h2>Evaluation</h2>" in text
    assert f'<td>roc_auc</td><td class="num">{evaluation["roc_auc"]:.6g}</td>' in text
    assert f'<td>pr_auc</td><td class="num">{evaluation["pr_auc"]:.6g}</td>' in text
    for row in evaluation["top_losses"]:
        assert "breast_cancer.csv, line " in row["source"] and f"<td>{row['source']}</td>" in text
    alts = [img["alt"] for img in _parse(text).images]
    assert any(alt.startswith("ROC curve") for alt in alts) and any(alt.startswith("Precision-recall") for alt in alts)
