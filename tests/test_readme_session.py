"""The README's command-line session runs as shown, on the files shipped in datasets/."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# A number in the output, as pandas and the command print them (6 significant digits, maybe an exponent).
NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:e[-+]\d+)?)")


def readme_session():
    """``(command, expected output lines)`` of the README's console block that runs ``protoattn fit``."""
    blocks = re.findall(r"```console\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    session = next(block for block in blocks if "$ protoattn fit" in block)
    steps = []
    for line in session.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def same_output(shown, printed):
    """Equal but for the last digits of numbers: training computes in floating point, whose rounding
    may differ between machines and library versions."""
    shown_parts, printed_parts = NUMBER.split(shown), NUMBER.split(printed)
    if len(shown_parts) != len(printed_parts):
        return False
    texts_equal = shown_parts[::2] == printed_parts[::2]
    numbers_close = np.allclose(
        np.array(shown_parts[1::2], dtype=float), np.array(printed_parts[1::2], dtype=float), rtol=0.02, atol=0.002
    )
    return texts_equal and numbers_close


def test_the_readme_session_runs_as_shown(tmp_path):
    pytest.importorskip("onnxscript")  # the session ends with export-onnx
    for name in ("iris.csv", "new.csv"):
        shutil.copy(ROOT / "datasets" / name, tmp_path)
    steps = readme_session()
    assert [command.split()[:2] for command, _ in steps][:2] == [["protoattn", "fit"], ["protoattn", "predict"]]
    for command, shown in steps:
        program, *args = shlex.split(command)
        assert program == "protoattn", command
        result = subprocess.run(
            [sys.executable, "-m", "protoattn", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        printed = result.stdout.splitlines()
        assert len(printed) == len(shown), f"{command}\nshown:\n{shown}\nprinted:\n{printed}"
        for shown_line, printed_line in zip(shown, printed, strict=True):
            assert same_output(shown_line, printed_line), f"{command}\nshown:   {shown_line}\nprinted: {printed_line}"
