"""The systemd units: accepted by `systemd-analyze verify` without a single warning, and well-formed."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")


def _parse(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(path)
    return cp


@pytest.mark.parametrize("name", ["tagger-watch.service", "tagger-watch.user.service"])
def test_unit_has_what_the_daemon_needs(name):
    svc = _parse(UNITS / name)["Service"]
    assert svc["Type"] == "notify" and svc["WatchdogSec"] and svc["Restart"] == "on-failure"
    assert svc["NoNewPrivileges"] == "yes" and svc["PrivateTmp"] == "yes" and svc["ProtectSystem"] == "strict"
    assert svc["ReadWritePaths"] and svc["MemoryMax"] and svc["IOSchedulingClass"] == "idle"
    assert "tagger watch" in svc["ExecStart"] and "kill -HUP" in svc["ExecReload"]


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (.ci/run installs Debian's systemd)")
@pytest.mark.parametrize("name", ["tagger-watch.service", "tagger-watch.user.service"])
def test_systemd_analyze_verify_is_clean(name, tmp_path):
    # verify checks that ExecStart exists and that writable paths are real: point them at this checkout.
    text = (UNITS / name).read_text()
    tagger_bin = str(Path(sys.executable).with_name("tagger"))
    text = (text.replace("/opt/tagger/.venv/bin/tagger", tagger_bin)
                .replace("%h/.local/share/tagger/venv/bin/tagger", tagger_bin)
                .replace("/srv/music", str(tmp_path)))
    unit = tmp_path / name.replace(".user", "-user")
    unit.write_text(text)
    out = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "" and out.stdout.strip() == "", out.stderr + out.stdout


def test_sysusers_entry():
    line = (UNITS / "tagger.sysusers").read_text().splitlines()[-1].split()
    assert line[:2] == ["u", "tagger"]
