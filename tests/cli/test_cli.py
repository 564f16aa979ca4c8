"""The command line end to end, and its one-line errors."""

import subprocess
import sys

import pytest

from dancegenre.cli.parser import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dancegenre", *args], capture_output=True, text=True, timeout=300)


def test_synth_then_prepare_end_to_end(tmp_path):
    r = run("synth", "-q", str(tmp_path / "c"), "--per-genre", "2", "--format", "wav", "--seed", "4")
    assert r.returncode == 0, r.stderr
    r = run("prepare", "-q", str(tmp_path / "c" / "catalog.csv"), str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "4 items" in r.stdout and "40 segments" in r.stdout
    assert (tmp_path / "s" / "store.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["prepare", "/no/such/dir", "out"], "no such file or folder"),
    (["prepare", "--workers", "0", ".", "out"], "must be at least 1"),
    (["synth", "x", "--format", "aac"], "invalid choice"),
])
def test_argument_errors_are_one_line(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_domain_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "-q", str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dancegenre prepare: error: no files in")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,genre\nx,y\n")
    assert main(["prepare", "-q", str(bad), str(tmp_path / "o2")]) == 2
    assert "lacks column(s) path, label" in capsys.readouterr().err
    assert main(["prepare", "-q", "--n-mels", "5000", str(bad), str(tmp_path / "o3")]) == 2
    assert "n_mels" in capsys.readouterr().err


def test_the_readme_shows_every_command_and_names_every_option():
    """The README documents every command with an example and names each of its options
    (``-q`` and ``-h`` are said once for all): a new option cannot land unexplained."""
    import argparse
    import re
    from pathlib import Path

    from dancegenre.cli.parser import build_parser

    readme = Path(__file__).parents[2] / "README.md"
    if not readme.exists():
        pytest.skip("the README is not beside an installed package")
    text = readme.read_text()
    examples = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for name, sub in commands.items():
        if not re.search(rf"dancegenre {re.escape(name)}\b", examples):
            missing.append(f"{name}: no example in a bash block")
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--quiet") and option not in text:
                    missing.append(f"{name} {option}: not in the README")
    assert not missing, "\n".join(missing)
