"""Regenerate every file in datasets/: ``python datasets/make_datasets.py [OUT_DIR]``.

The numbers come from :mod:`protoattn.datasets`, so the files and the loaders cannot disagree; the test
suite regenerates into a temporary folder and checks that the files come out byte for byte the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from protoattn.datasets import load_moons_split, load_tabular


def write_moons(out: Path) -> list[Path]:
    X_train, X_val, y_train, y_val = load_moons_split()
    paths = []
    for name, X, y in (("moons_train.csv", X_train, y_train), ("moons_validation.csv", X_val, y_val)):
        path = out / name
        rows = np.column_stack([X, y])
        np.savetxt(path, rows, fmt=["%.6f", "%.6f", "%d"], delimiter=",", header="x1,x2,label", comments="")
        paths.append(path)
    return paths


def write_iris(out: Path) -> list[Path]:
    """scikit-learn's iris with named columns and species names (``iris.csv``), and the first flower of
    each species without its label (``new.csv``): the files of the README's command-line session."""
    iris = load_tabular("iris")
    columns = [name.replace(" (cm)", "").replace(" ", "_") for name in iris.feature_names]
    species = [str(name) for name in iris.target_names[iris.target]]
    measurements = [[f"{v:.1f}" for v in row] for row in iris.data]  # measured to the millimetre
    first = [species.index(name) for name in iris.target_names]
    rows = {
        out / "iris.csv": [columns + ["species"]] + [m + [s] for m, s in zip(measurements, species, strict=True)],
        out / "new.csv": [columns] + [measurements[i] for i in first],
    }
    for path, lines in rows.items():
        path.write_text("".join(",".join(line) + "\n" for line in lines), newline="\n")
    return list(rows)


def main(argv: list[str] | None = None) -> list[Path]:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    paths = write_moons(out) + write_iris(out)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
