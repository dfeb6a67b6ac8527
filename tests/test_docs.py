"""The user docs that are generated from the code are current."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_page_matches_the_commands_help():
    done = subprocess.run([sys.executable, str(REPO / "docs" / "cli_reference.py"), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
