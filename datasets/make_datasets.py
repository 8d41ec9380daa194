"""Regenerate every file in datasets/: ``python datasets/make_datasets.py [OUT_DIR]``.

The numbers come from :mod:`protoattn.datasets`, so the files and the loaders cannot disagree; the test
suite regenerates into a temporary folder and checks that the files come out byte for byte the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from protoattn.datasets import load_moons_split


def write_moons(out: Path) -> list[Path]:
    X_train, X_val, y_train, y_val = load_moons_split()
    paths = []
    for name, X, y in (("moons_train.csv", X_train, y_train), ("moons_validation.csv", X_val, y_val)):
        path = out / name
        rows = np.column_stack([X, y])
        np.savetxt(path, rows, fmt=["%.6f", "%.6f", "%d"], delimiter=",", header="x1,x2,label", comments="")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    paths = write_moons(out)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
