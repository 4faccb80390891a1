"""`dlcli report RUN`: one self-contained HTML page of a run, to hand in or link to.

Everything is inside the file: the plots as PNG data URIs (the run's own PNGs, or drawn from
metrics.csv when there are none), no script, no font, no link to anything outside, so it opens
from `file://` offline and prints cleanly (a print stylesheet). Headings and tables are real
ones, every image has alt text, and what colour marks is also said in words. Building it again
gives the same bytes but for the one generated-at line.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .errors import DlcliError, RunDirError

REPORT_FILE = "report.html"
GENERATOR = "dlcli report"
# PNGs of a run that are not training curves: dlcli evaluate's and lr-find's, shown in their own sections.
EVALUATION_PNGS = {
    "roc.png": "ROC curve: true positive rate against false positive rate over every threshold",
    "pr.png": "Precision-recall curve: precision against recall over every threshold",
    "predicted_vs_true.png": "Scatter of the predicted against the true value of each test sample",
    "top_losses.png": "Grid of the test examples with the highest loss, each labelled with its true and predicted class",
}
CURVE_PNGS_SKIPPED = ("confusion.png", "lr_find.png", *EVALUATION_PNGS)

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1b1b; margin: 2rem auto;
  max-width: 62rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
  border-bottom: 1px solid #ccc; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; } caption { text-align: left; font-weight: 600; padding: .3rem 0; }
tr.changed td { background: #fff4cc; font-weight: 600; } .status { font-weight: 600; }
.note { border-left: 4px solid #b35c00; padding: .3rem .8rem; background: #fff4e5; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; } figcaption { color: #444; font-size: .9rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .85rem; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer;
  text-decoration: underline dotted; }
.generated { color: #555; font-size: .85rem; margin-top: 2rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; } h2 { break-after: avoid; }
  figure, table { break-inside: avoid; } pre { white-space: pre-wrap; } a { color: inherit; }
  tr.changed td { background: none; } th button { text-decoration: none; }
}
"""


def default_report_path(run_dir: Path) -> Path:
    return Path(run_dir) / REPORT_FILE


def is_report_file(path: Path) -> bool:
    """Whether `path` is a report dlcli wrote (so it may be replaced without --force)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(2048)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">' in head


def write_report(run_dir: Path, out: Optional[Path] = None, *, force: bool = False) -> Path:
    """Build the report of the run in `run_dir` and write it (default: report.html in the run)."""
    run_dir = Path(run_dir)
    _require_run(run_dir)
    return write_page(run_dir, out, build_report, force=force)


def write_page(folder: Path, out: Optional[Path], build: Callable[[Path], str], *, force: bool = False) -> Path:
    """Write `build(folder)` to out (default: report.html in the folder), under --out's rules:
    never over a file of the folder but a report, nor over a file dlcli did not write without
    --force. The run, sweep and cross-validation pages all go through here."""
    from .rundir import atomic_write_text, check_output_file

    target = Path(out) if out is not None else default_report_path(folder)
    check_output_file(
        target,
        option="--out",
        run_dir=folder,
        allowed_in_run=(REPORT_FILE,),
        force=force,
        written_by_dlcli=is_report_file,
    )
    atomic_write_text(target, build(folder))
    return target


def build_report(run_dir: Path, generated_at: Optional[str] = None) -> str:
    """The report's HTML. Only the generated-at line depends on when it is built."""
    run_dir = Path(run_dir)
    info = _require_run(run_dir)
    facts = _RunFacts.read(run_dir, info)
    body = [
        *_header(facts),
        *_curves_section(facts),
        *_confusion_section(facts),
        *_evaluation_section(facts),
        *_model_section(facts),
        *_config_section(facts),
        *_environment_section(facts),
        *_files_section(facts),
    ]
    return page(f"{facts.name}: dlcli run report", body, generated_at)


def page(title: str, body: list[str], generated_at: Optional[str] = None, script: Optional[str] = None) -> str:
    """A whole self-contained page around `body`; `script`, inline at its end, may only add to a
    page that reads and prints without it. Only the generated-at line depends on the time."""
    import time

    from . import __version__

    stamp = generated_at or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        *body,
        "</main>",
        f'<p class="generated">Generated by dlcli {_e(__version__)} at {_e(stamp)}.</p>',
        *([f"<script>{script}</script>"] if script else []),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _require_run(run_dir: Path) -> dict:
    from .rundir import RUN_FILE, read_json

    if not run_dir.is_dir():
        raise RunDirError(
            f"{str(run_dir)!r} is not a run folder (no such folder).",
            hint="Give a path such as runs/<id>; `dlcli runs` lists them.",
        )
    if not (run_dir / RUN_FILE).is_file():
        raise RunDirError(
            f"{str(run_dir)!r} is not a run folder: it has no run.json.",
            hint="Give a folder that `dlcli train` created, such as runs/<id>.",
        )
    return read_json(run_dir / RUN_FILE)


@dataclasses.dataclass
class _RunFacts:
    """What the report shows, read once from the run folder."""

    run_dir: Path
    info: dict
    status: str
    name: str
    columns: list[str]
    rows: list[dict]
    results: dict
    config: Any  # config.Config, or None when config.yaml no longer validates
    config_text: str
    problem: Optional[str]

    @classmethod
    def read(cls, run_dir: Path, info: dict) -> _RunFacts:
        from .config import load_config
        from .rundir import CONFIG_FILE, METRICS_FILE, RESULTS_FILE, read_json, read_metrics
        from .runs import read_run

        record = read_run(run_dir)
        columns, rows = read_metrics(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else ([], [])
        results = read_json(run_dir / RESULTS_FILE) if (run_dir / RESULTS_FILE).is_file() else {}
        config, text, problem = None, "", record.problem
        if (run_dir / CONFIG_FILE).is_file():
            text = (run_dir / CONFIG_FILE).read_text(encoding="utf-8")
            try:
                config = load_config(run_dir / CONFIG_FILE)
            except DlcliError as exc:
                problem = f"config.yaml no longer validates: {exc.message}"
        name = record.name or run_dir.name
        return cls(run_dir, info, record.status, name, columns, rows, results, config, text, problem)


# ----------------------------------------------------------------------------- sections


def _header(facts: _RunFacts) -> list[str]:
    out = [f"<h1>{_e(facts.name)}</h1>", f"<p>Run <code>{_e(facts.run_dir.name)}</code>.</p>"]
    out.append(f'<p>Status: <span class="status">{_e(facts.status)}</span>. {_e(_one_line_result(facts))}</p>')
    if facts.status == "running":
        out.append(
            '<p class="note">This run was still training when the report was made: it shows the epochs '
            "finished by then. Build it again when the run has ended.</p>"
        )
    if facts.problem:
        out.append(f'<p class="note">{_e(facts.problem)}</p>')
    rows = [(k, _fmt(v)) for k, v in facts.results.items() if not isinstance(v, dict)]
    best = facts.info.get("best") or {}
    if best.get("monitor"):
        rows.append((f"best {best['monitor']}", f"{_fmt(best.get('value'))} (epoch {best.get('epoch')})"))
    if rows:
        out += ["<h2>Result</h2>", _table(("measure", "value"), rows, caption="Results of the run", numeric=(1,))]
    return out


def _one_line_result(facts: _RunFacts) -> str:
    done = facts.info.get("epochs_completed", len(facts.rows))
    planned = facts.info.get("epochs")
    parts = [f"{done} of {planned} epochs" if planned else f"{done} epochs"]
    tests = [f"{k} {_fmt(v)}" for k, v in facts.results.items() if k.startswith("test_") and k != "test_samples"]
    parts += tests
    best = facts.info.get("best") or {}
    if best.get("monitor") and best.get("value") is not None:
        parts.append(f"best {best['monitor']} {_fmt(best['value'])} at epoch {best.get('epoch')}")
    return "; ".join(parts) + "."


def _curves_section(facts: _RunFacts) -> list[str]:
    out = ["<h2>Training curves</h2>"]
    pngs = _curve_pngs(facts)
    if not pngs:
        out.append("<p>No epoch has finished, so there is nothing to plot.</p>")
    for stem, data in pngs:
        label = stem.replace("_", " ")
        alt = (
            f"Line chart of {label} per epoch, training and validation where there is validation data; "
            "the values are in the table Metrics per epoch."
        )
        out.append(_figure(data, alt, f"{label} per epoch"))
    if facts.rows:
        cols = [c for c in facts.columns]
        rows = [tuple(_fmt(r.get(c)) for c in cols) for r in facts.rows]
        out.append("<h3>Metrics per epoch</h3>")
        out.append(_table(cols, rows, caption="metrics.csv", numeric=tuple(range(len(cols)))))
    return out


def _curve_pngs(facts: _RunFacts) -> list[tuple[str, bytes]]:
    """The run's own curve PNGs; drawn from metrics.csv (in a temporary folder) when there are none."""
    from .plots import is_dlcli_png

    found = [p for p in facts.run_dir.glob("*.png") if p.name not in CURVE_PNGS_SKIPPED and is_dlcli_png(p)]
    if found:
        return [(p.stem, p.read_bytes()) for p in sorted(found, key=_loss_first)]
    if not facts.rows:
        return []
    import tempfile

    from .plots import plot_run

    with tempfile.TemporaryDirectory() as tmp:
        drawn = plot_run(facts.run_dir, out_dir=Path(tmp))
        return [(p.stem, p.read_bytes()) for p in sorted(drawn, key=_loss_first)]


def _loss_first(path: Path) -> tuple[bool, str]:
    return (path.stem != "loss", path.name)


def _confusion_section(facts: _RunFacts) -> list[str]:
    evaluations = sorted(facts.run_dir.glob("evaluation-*.json"))
    png = facts.run_dir / "confusion.png"
    if not evaluations and not png.is_file():
        return []
    out = ["<h2>Confusion matrix</h2>"]
    if png.is_file():
        alt = "Confusion matrix: true classes in rows, predicted classes in columns; the counts are in the table below."
        out.append(_figure(png.read_bytes(), alt, "confusion.png, written by dlcli evaluate"))
    for path in evaluations:
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or "confusion" not in result:
            continue
        names = [str(n) for n in result.get("class_names") or range(len(result["confusion"]))]
        rows = [
            (f"{n} ({sum(r)})", *(f"{c} (correct)" if i == j else str(c) for j, c in enumerate(r)))
            for i, (n, r) in enumerate(zip(names, result["confusion"]))
        ]
        caption = (
            f"{path.name}: {result.get('split')} split, {result.get('checkpoint')} checkpoint "
            f"(epoch {result.get('epoch')}); rows are the true class, columns the predicted one"
        )
        out.append(
            _table(("true \\ predicted", *names), rows, caption=caption, numeric=tuple(range(1, len(names) + 1)))
        )
    return out


def _evaluations(run_dir: Path) -> list[tuple[str, dict]]:
    """(file name, content) of each evaluation-<split>-<checkpoint>.json that reads as a mapping."""
    out = []
    for path in sorted(run_dir.glob("evaluation-*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict):
            out.append((path.name, result))
    return out


EVALUATION_MEASURES = ("accuracy", "roc_auc", "pr_auc", "threshold", "mae", "rmse", "r2", "loss")


def _evaluation_section(facts: _RunFacts) -> list[str]:
    """What dlcli evaluate wrote beyond the confusion matrix: the classification report, ROC-AUC,
    PR-AUC and threshold, regression errors, the worst mistakes, and their plots."""
    out: list[str] = []
    for name, result in _evaluations(facts.run_dir):
        where = f"{name}: {result.get('split')} split, {result.get('checkpoint')} checkpoint"
        measures = [(k, _fmt(result[k])) for k in EVALUATION_MEASURES if isinstance(result.get(k), (int, float))]
        if measures:
            out.append(_table(("measure", "value"), measures, caption=where, numeric=(1,)))
        report = result.get("classification_report")
        if isinstance(report, dict):
            out.append(_classification_table(report, where))
        losses = result.get("top_losses")
        if isinstance(losses, list) and losses:
            out.append(_top_losses_table(losses, where))
    figures = [
        _figure((facts.run_dir / png).read_bytes(), alt, f"{png}, written by dlcli evaluate")
        for png, alt in EVALUATION_PNGS.items()
        if (facts.run_dir / png).is_file()
    ]
    if not out and not figures:
        return []
    return ["<h2>Evaluation</h2>", *out, *figures]


def _classification_table(report: dict, where: str) -> str:
    """scikit-learn's classification_report(output_dict=True): per class, then the averages."""
    rows = []
    for label, scores in report.items():
        if isinstance(scores, dict):
            cells = [_fmt(scores.get(k)) for k in ("precision", "recall", "f1-score", "support")]
            rows.append((str(label), *cells))
    if isinstance(report.get("accuracy"), (int, float)):
        rows.append(("accuracy", "", "", _fmt(report["accuracy"]), ""))
    return _table(
        ("class", "precision", "recall", "F1", "support"),
        rows,
        caption=f"Classification report ({where})",
        numeric=(1, 2, 3, 4),
    )


def _top_losses_table(losses: list, where: str) -> str:
    keys = ("index", "source", "true", "predicted", "probability", "loss")
    rows = [tuple(_fmt(item.get(k)) for k in keys) for item in losses if isinstance(item, dict)]
    return _table(keys, rows, caption=f"The worst mistakes: highest loss first ({where})", numeric=(0, 4, 5))


def _model_section(facts: _RunFacts) -> list[str]:
    out = ["<h2>Model</h2>"]
    if facts.config is None:
        return out + ["<p>The model cannot be described: config.yaml is missing or no longer validates.</p>"]
    try:
        from .plan import plan_experiment, saved_preprocessing
        from .summary import summary_data

        plan = plan_experiment(facts.config, saved_preprocessing(facts.run_dir))
        data = summary_data(plan.model_plan, plan)
    except DlcliError as exc:
        return out + [f"<p>The model cannot be described: {_e(exc.message)}</p>"]
    rows = [
        (layer["name"], layer["type"], str(layer["output_shape"]), f"{layer['params']:,}") for layer in data["layers"]
    ]
    out.append(f"<p>Input shape {_e(str(data['input_shape']))}; loss {_e(str(data.get('loss')))}.</p>")
    out.append(
        _table(("layer", "type", "output shape", "parameters"), rows, caption="Layers (as dlcli summary)", numeric=(3,))
    )
    totals = [
        ("total parameters", f"{data['total_params']:,}"),
        ("trainable", f"{data['trainable_params']:,}"),
        ("non-trainable", f"{data['non_trainable_params']:,}"),
        ("multiply-adds per sample", f"{data['mult_adds']:,}"),
    ]
    out.append(_table(("", "count"), totals, caption="Size", numeric=(1,)))
    return out


def _config_section(facts: _RunFacts) -> list[str]:
    out = ["<h2>Configuration</h2>"]
    if facts.config is not None:
        rows, changed = [], []
        for key, value, default in config_rows(facts.config):
            differs = default is _NO_DEFAULT or value != default
            mark = "changed" if differs else ""
            rows.append((key, _json(value), "(required)" if default is _NO_DEFAULT else _json(default), mark))
            changed.append(differs)
        out.append(
            "<p>Every key of the resolved config; the rows whose value differs from dlcli's default say "
            "<strong>changed</strong> (and are highlighted).</p>"
        )
        out.append(
            _table(("key", "value", "default", "differs"), rows, caption="config.yaml, resolved", marked=changed)
        )
    if facts.config_text:
        out.append(f"<details><summary>config.yaml as saved</summary><pre>{_e(facts.config_text)}</pre></details>")
    return out


def _environment_section(facts: _RunFacts) -> list[str]:
    info = facts.info
    precision = info.get("precision") or (facts.config.training.precision if facts.config is not None else None)
    env = [
        ("dlcli", info.get("dlcli")),
        ("PyTorch", info.get("torch")),
        ("Python", info.get("python")),
        ("platform", info.get("platform")),
        ("device", info.get("device")),
        ("precision", precision),
        ("processes", info.get("world_size")),
        ("seed", info.get("seed")),
        ("command", " ".join(info.get("command") or [])),
    ]
    seconds = [r["seconds"] for r in facts.rows if isinstance(r.get("seconds"), (int, float))]
    times = [
        ("created", info.get("created_at")),
        ("started", info.get("started_at")),
        ("finished", info.get("finished_at")),
        ("duration (s)", _fmt(info.get("duration_seconds"))),
        ("epochs completed", f"{info.get('epochs_completed', len(facts.rows))} of {info.get('epochs')}"),
        ("seconds per epoch (mean)", _fmt(sum(seconds) / len(seconds)) if seconds else None),
        ("resumed from epoch", info.get("resumed_from_epoch")),
    ]
    return [
        "<h2>Environment</h2>",
        _table(("", "value"), [(k, "" if v is None else str(v)) for k, v in env], caption="Versions and machine"),
        "<h2>Timings</h2>",
        _table(("", "value"), [(k, "" if v is None else str(v)) for k, v in times], caption="Timings"),
    ]


def _files_section(facts: _RunFacts) -> list[str]:
    rows = []
    for path in sorted(p for p in facts.run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(facts.run_dir).as_posix()
        if relative == REPORT_FILE or is_report_file(path):
            continue  # this report itself, which changes with every build
        rows.append((relative, f"{path.stat().st_size:,}"))
    return [
        "<h2>Files of the run folder</h2>",
        _table(("file", "bytes"), rows, caption=str(facts.run_dir.name), numeric=(1,)),
    ]


# ----------------------------------------------------------------------------- the config against its defaults

_NO_DEFAULT = object()


def config_rows(config: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, default) of every leaf of a config (dataclasses all the way down,
    layers as model.layers.N.kind.option); the default is _NO_DEFAULT for a required key."""
    from .config import config_to_dict

    out: list[tuple[str, Any, Any]] = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
                continue
            if isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
                for i, layer in enumerate(value):
                    kind = getattr(type(layer), "kind", type(layer).__name__)
                    walk(layer, f"{key}.{i}.{kind}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = config_to_dict(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = config_to_dict(f.default_factory())
            else:
                default = _NO_DEFAULT
            out.append((key, config_to_dict(value), default))

    walk(config, "")
    return out


# ----------------------------------------------------------------------------- HTML pieces


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _table(
    header: Iterable[str],
    rows: Iterable[Iterable[Any]],
    *,
    caption: str = "",
    numeric: tuple[int, ...] = (),
    marked: Optional[list[bool]] = None,
    css_class: str = "",
) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="num"' if i in numeric else ""
        scope = ' scope="col"' if tag == "th" else ""
        return f"<{tag}{cls}{scope}>{_e(value)}</{tag}>"

    lines = [f'<table class="{css_class}">' if css_class else "<table>"]
    if caption:
        lines.append(f"<caption>{_e(caption)}</caption>")
    lines.append("<thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr></thead>")
    lines.append("<tbody>")
    for n, row in enumerate(rows):
        cls = ' class="changed"' if marked is not None and marked[n] else ""
        lines.append(f"<tr{cls}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)
