"""`sluice top` (issue 17) in a real terminal: tmux runs it against a loaded instance; `capture-pane`
shows every component of the config, rates that change between two captures and the sampler's p;
`s` re-sorts, `q` quits with exit status 0."""

import os
import re
import shlex
import shutil
import subprocess
import time

import pytest
from conftest import BIN, wait_for
from test_sampling import Load
from test_status_page import ops_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def tmux(tmp_path):
    if not shutil.which("tmux"):
        subprocess.run(["bash", os.path.join(ROOT, "tests", "browser", "setup.sh")], check=True)
    sock = f"sluice-top-{os.getpid()}"
    run = lambda *a, **kw: subprocess.run(["tmux", "-L", sock, *a], capture_output=True, text=True, **kw)
    yield run
    run("kill-server")


def test_top_shows_the_live_instance_and_quits_on_q(sluice, tmux, tmp_path):
    sluice.start(ops_config(sluice))
    load = Load(sluice, 3000.0)
    exit_file = tmp_path / "top.exit"
    cmd = f"{shlex.quote(str(BIN))} top --admin 127.0.0.1:{sluice.admin} --interval 0.5; echo $? > {shlex.quote(str(exit_file))}; sleep 60"
    try:
        r = tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "60", cmd)
        assert r.returncode == 0, r.stderr
        capture = lambda: tmux("capture-pane", "-p", "-t", "top").stdout
        wait_for(lambda: "p=" in capture() and "accepted/s" in capture(), timeout=20, what="sluice top drawn")
        time.sleep(1.5)
        first = capture()
        time.sleep(2)
        second = capture()
    finally:
        load.end()
    for name in ["otlp", "sampler", "batch", "slow", "archive", "traces", "metrics"]:
        assert re.search(rf"\b{name}\b", second), f"{name} missing:\n{second}"
    assert "Receivers" in second and "Exporters" in second and "Samplers" in second and "Pipelines" in second

    def row(screen, first_cell):
        for line in screen.splitlines():
            cells = line.strip("│ ").split()
            if cells and cells[0] == first_cell:
                return cells
        raise AssertionError(f"no row {first_cell!r} in:\n{screen}")

    # Receiver row: otlp otlp traces <accepted/s> <refused/s> <accepted total> ...
    rx1, rx2 = row(first, "otlp"), row(second, "otlp")
    assert rx1[2] == "traces" and rx1[5] != rx2[5], (rx1, rx2)
    assert float(rx2[3].rstrip("k")) > 0, rx2
    # Exporter rows carry a sent/s rate; the file exporter's total moves on.
    arch1, arch2 = row(first, "archive"), row(second, "archive")
    assert arch1 != arch2, (arch1, arch2)
    p = re.search(r"p=(\d\.\d+)", second)
    assert p and 0 < float(p.group(1)) <= 1, second
    assert "slow=" in second, "the loads the sampler reads"

    tmux("send-keys", "-t", "top", "s")
    wait_for(lambda: "sorted by rate" in capture(), timeout=5, what="sort key")
    tmux("send-keys", "-t", "top", "q")
    wait_for(lambda: exit_file.exists() and exit_file.read_text().strip() != "", timeout=10, what="sluice top exit")
    assert exit_file.read_text().strip() == "0"
