"""SIGKILL a SQLite study's process at random points (benches/crash_durability.py, with fewer
kills than its default 50): the file stays intact, no trial a callback saw finished is lost, and
the study resumes."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benches" / "crash_durability.py"


def test_sigkill_at_random_points_loses_no_finished_trial(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(BENCH), "--kills", "6", "--trials", "200", "--seed", "7", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    assert r["kills_recovered"] == 6 and r["finished_trials_lost"] == 0 and r["integrity"] == ["ok"]
    assert r["resumed"] and r["trials_after_resume"] == 200
    # The kills did land among finished trials, not only during start-up.
    assert r["points"][-1]["seen"] > 0
