"""Conventions of a Typer CLI that people rely on: --version and shell completion."""

import os
import shlex
import subprocess
import sys

from typer.testing import CliRunner

from dlcli import __version__
from dlcli.cli import app


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"dlcli {__version__} (Python ")


def test_shell_completion_script_and_completions():
    # --show-completion detects the shell it was started from: start it from bash (`; true` keeps
    # bash from replacing itself with the command, so there is a bash parent to find).
    shown = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m dlcli --show-completion; true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "_dlcli_completion()" in shown.stdout and "complete_bash" in shown.stdout, shown.stdout + shown.stderr
    # What bash asks for when the user types `dlcli ev<TAB>`: the real program answers.
    env = {**os.environ, "COMP_WORDS": "dlcli ev", "COMP_CWORD": "1", "_DLCLI_COMPLETE": "complete_bash"}
    done = subprocess.run([sys.executable, "-m", "dlcli"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["evaluate"]
