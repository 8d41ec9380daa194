"""Execute notebooks top to bottom in fresh kernels and save them with their outputs.

    python notebooks/execute.py                                # every notebook here
    python notebooks/execute.py 02_attention_comparison.ipynb  # one of them

Each runs with this folder as its working directory, so its figures land in ``notebooks/figures/``. The
test suite runs :func:`execute` on each notebook in a temporary folder instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a fresh kernel working in ``workdir``; return it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", record_timing=False, resources={"metadata": {"path": workdir}}
    )
    # One thread per kernel: the models here are tiny, and on a shared 2-core machine threads only compete.
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    return notebook


def main(argv: list[str] | None = None) -> None:
    names = sys.argv[1:] if argv is None else argv
    paths = [HERE / name for name in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        nbformat.write(execute(path, HERE), path)
        print(f"executed {path.name}")


if __name__ == "__main__":
    main()
