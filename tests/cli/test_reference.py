"""Shell completion and the man page come from the parser itself: every command and option is in them."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

from tagger.cli import build_parser
from tagger.cli.reference import _commands


def _tagger(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "tagger", *args], capture_output=True, text=True, check=True,
                          cwd=ROOT, timeout=120).stdout


def _complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    run = subprocess.run(["bash", "-c", f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _tagger; '
                                        'printf "%s\\n" "${COMPREPLY[@]}"'], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_and_their_options():
    script = _tagger("completion", "bash")
    assert _complete(script, ["tagger", "sc"]) == ["scan"]
    assert _complete(script, ["tagger", "scan", "--pre"]) == ["--pretend"]
    assert "--model-precision" in _complete(script, ["tagger", "show", "--mod"])
    assert _complete(script, ["tagger", "batch", "in"]) == ["index"]
    assert "--nprobe" in _complete(script, ["tagger", "batch", "index", "--n"])


def test_the_man_page_lists_every_command_and_option_and_renders_cleanly(tmp_path):
    page = _tagger("manpage")
    parser = build_parser()
    for name, sub in _commands(parser).items():
        assert f".SS {name}" in page
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt.replace("-", "\\-") in page, (name, opt)
    if shutil.which("groff"):
        (tmp_path / "tagger.1").write_text(page)
        run = subprocess.run(["groff", "-man", "-ww", "-z", str(tmp_path / "tagger.1")], capture_output=True, text=True)
        assert run.returncode == 0 and not run.stderr, run.stderr


def test_zsh_completion_names_every_command():
    script = _tagger("completion", "zsh")
    assert script.startswith("#compdef tagger")
    assert all(f"'{name}:" in script for name in _commands(build_parser()) if " " not in name)
