"""Make the documentation's two pictures (run from the repository root; needs chromium,
chromedriver and selenium, and for the second yaml-language-server from npm):

1. report-first-screen.png: the first screen of `dlcli report` on a run of
   configs/iris_mlp.yaml, in headless chromium at 1000x700 (as tests/test_report.py opens it).
2. schema-in-editor.png: what the YAML language server (the engine of VS Code's YAML
   extension) reports for a config with mistakes, through the schema named by its
   `# yaml-language-server: $schema=...` line. There is no GUI editor on the machine that made
   it: this script speaks the language server protocol to the real server
   (`yaml-language-server --stdio`), then draws its diagnostics, a completion list and a hover
   text as an editor would show them, in HTML, photographed by headless chromium.

    python docs/images/make_images.py --yaml-language-server /tmp/yls/node_modules/.bin/yaml-language-server
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"

EXAMPLE = """# yaml-language-server: $schema=../schema/dlcli.schema.json
name: iris_mlp
data:
  dataset: csv
  path: examples/tabular/iris.csv
  target: species
  validation_split: 1.5
model: {preset: mlp, hidden: [16, 16], activation: tanh}
loss: sparse_categorical_crossentropy
optimizer: {name: adam, lr: 0.005}
training:
  epochs: 50
  batch_sise: 16
"""
EXAMPLE += "  \n"  # an indented empty last line: where the completion is asked for, inside `training:`


def screenshot(page: Path, out: Path, width: int, height: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get("file://" + str(page))
        time.sleep(0.5)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def report_image(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        dlcli = [sys.executable, "-m", "dlcli"]
        subprocess.run([*dlcli, "train", "configs/iris_mlp.yaml", "--runs-dir", str(runs), "-q"], check=True)
        (run,) = list(runs.iterdir())
        subprocess.run([*dlcli, "evaluate", str(run)], check=True, capture_output=True)
        subprocess.run([*dlcli, "report", str(run)], check=True)
        screenshot(run / "report.html", out, 1000, 700)


class Server:
    """A minimal language server protocol client over the server's stdin and stdout."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.next_id = 0

    def send(self, method: str, params: dict, request: bool = False) -> int | None:
        message: dict = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()
        return message.get("id")

    def read(self) -> dict:
        assert self.proc.stdout is not None
        length = 0
        while True:
            line = self.proc.stdout.readline().decode().strip()
            if not line:
                break
            if line.lower().startswith("content-length:"):
                length = int(line.split(":")[1])
        return json.loads(self.proc.stdout.read(length))

    def wait(self, predicate, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.read()
            if message.get("method") == "workspace/configuration":  # the server asks for its settings
                settings = {"validate": True, "hover": True, "completion": True, "schemaStore": {"enable": False}}
                self.reply(message["id"], [settings for _ in message["params"]["items"]])
                continue
            if message.get("id") is not None and "method" in message:
                self.reply(message["id"], None)  # other requests of the server: nothing to add
                continue
            if predicate(message):
                return message
        raise TimeoutError("the language server did not answer")

    def reply(self, message_id: int, result) -> None:
        body = json.dumps({"jsonrpc": "2.0", "id": message_id, "result": result}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()


def ask_the_language_server(command: list[str]) -> tuple[list[dict], list[str], str]:
    """(diagnostics, completion labels inside `training:`, hover text of `epochs`)."""
    uri = (ROOT / "configs" / "example.yaml").as_uri()  # the modeline's relative path resolves from here
    server = Server(command)
    try:
        ident = server.send(
            "initialize", {"processId": None, "rootUri": ROOT.as_uri(), "capabilities": {}}, request=True
        )
        server.wait(lambda m: m.get("id") == ident)
        server.send("initialized", {})
        settings = {"yaml": {"validate": True, "hover": True, "completion": True, "schemaStore": {"enable": False}}}
        server.send("workspace/didChangeConfiguration", {"settings": settings})
        document = {"uri": uri, "languageId": "yaml", "version": 1, "text": EXAMPLE}
        server.send("textDocument/didOpen", {"textDocument": document})
        diagnostics = server.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")["params"][
            "diagnostics"
        ]
        lines = EXAMPLE.splitlines()
        position = {"line": len(lines) - 1, "character": 2}  # the empty line inside `training:`
        ident = server.send(
            "textDocument/completion", {"textDocument": {"uri": uri}, "position": position}, request=True
        )
        result = server.wait(lambda m: m.get("id") == ident)["result"]
        items = result.get("items", result) if isinstance(result, dict) else result or []
        labels = [item["label"] for item in items]
        epochs_line = next(i for i, line in enumerate(lines) if line.strip().startswith("epochs"))
        ident = server.send(
            "textDocument/hover",
            {"textDocument": {"uri": uri}, "position": {"line": epochs_line, "character": 4}},
            request=True,
        )
        hover = server.wait(lambda m: m.get("id") == ident)["result"] or {}
        contents = hover.get("contents", "")
        text = contents.get("value", "") if isinstance(contents, dict) else str(contents)
        return diagnostics, labels, text.split("\n\nSource:")[0].removeprefix("#### ")
    finally:
        server.proc.kill()


def editor_page(diagnostics: list[dict], labels: list[str], hover: str) -> str:
    lines = EXAMPLE.splitlines()
    marks: dict[int, list[tuple[int, int]]] = {}
    for d in diagnostics:
        start, end = d["range"]["start"], d["range"]["end"]
        marks.setdefault(start["line"], []).append((start["character"], end["character"]))
    rows = []
    for number, line in enumerate(lines):
        text = line
        for start, end in sorted(marks.get(number, []), reverse=True):
            text = text[:start] + "\0" + text[start:end] + "\1" + text[end:]
        text = html.escape(text).replace("\0", '<span class="bad">').replace("\1", "</span>")
        rows.append(f'<div><span class="no">{number + 1}</span>{text or " "}</div>')
    problems = "".join(
        f"<li>line {d['range']['start']['line'] + 1}: {html.escape(d['message'])}</li>" for d in diagnostics
    )
    shown = [label for label in labels if label not in ("epochs",)][:8]
    completion = "".join(f"<li>{html.escape(label)}</li>" for label in shown)
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
body {{ font: 13px system-ui, sans-serif; margin: 0; background: #fff; color: #1b1b1b; }}
.code {{ font: 13px/1.5 monospace; background: #fafafa; padding: 8px 0; border-bottom: 1px solid #ccc; }}
.code div {{ white-space: pre; }}
.no {{ display: inline-block; width: 2.5em; color: #999; text-align: right; margin-right: 1em; }}
.bad {{ text-decoration: underline wavy #d00; text-underline-offset: 3px; }}
.panes {{ display: flex; gap: 16px; padding: 8px 12px; }} .panes > div {{ flex: 1; }}
h2 {{ font-size: 13px; margin: 4px 0; }} ul {{ margin: 0; padding-left: 1.2em; }}
li {{ margin: 2px 0; }} .hover {{ background: #f3f3f3; padding: 4px 8px; white-space: pre-wrap; }}
</style></head><body>
<div class="code">{"".join(rows)}</div>
<div class="panes">
<div><h2>Problems (yaml-language-server, from schema/dlcli.schema.json)</h2><ul>{problems}</ul></div>
<div><h2>Completion at line {len(lines)}, inside training:</h2><ul>{completion}</ul>
<h2>Hover on epochs</h2><div class="hover">{html.escape(hover)}</div></div>
</div></body></html>"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml-language-server", help="the server's executable (npm install yaml-language-server)")
    parser.add_argument("--only", choices=("report", "schema"))
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "report"):
        report_image(IMAGES / "report-first-screen.png")
    if args.only in (None, "schema") and args.yaml_language_server:
        diagnostics, labels, hover = ask_the_language_server([args.yaml_language_server, "--stdio"])
        print(json.dumps({"diagnostics": diagnostics, "completion": labels, "hover": hover}, indent=2))
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "editor.html"
            page.write_text(editor_page(diagnostics, labels, hover), encoding="utf-8")
            screenshot(page, IMAGES / "schema-in-editor.png", 1000, 720)


if __name__ == "__main__":
    main()
