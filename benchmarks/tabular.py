"""Accuracy on raw mixed-type tables: text columns and missing cells, as a pandas DataFrame holds them.

5-fold stratified cross-validation (shuffled, fixed seed) on real tables that installed packages ship
(the ``dev`` extra installs them; nothing is downloaded at run time). IDWAttentionClassifier and
HistGradientBoostingClassifier(categorical_features="from_dtype") get the raw DataFrame; the MLP and
logistic regression get the usual preprocessing (median-impute + scale the numeric columns,
most-frequent-impute + one-hot the others). Prints a markdown table of mean ± std accuracy per table,
the mean over tables and the total time per model. Tables over ``--max-rows`` rows are subsampled
with a fixed seed. Run from the repository root: ``python benchmarks/tabular.py --n-jobs 2``. By default
the means are over fifteen seeds (0-14), since one seed's mean moves by a few thousandths with the
estimators' seeds (``benchmarks/RESULTS.md``); ``--seed 0`` gives one seed's quickly.

The loaders return ``(X, y)``: X a DataFrame whose text columns are ``object`` dtype with NaN for
missing cells, identifier-like columns and target leaks dropped; y a Series. Importable with
``benchmarks/`` on ``sys.path``: ``from tabular import load_penguins``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import describe
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from protoattn import IDWAttentionClassifier

OURS = "IDWAttention (raw)"
HGB = "HistGradientBoosting (raw)"


def package_file(package: str, *names: str) -> Path:
    """The first of ``names`` (paths relative to the package folder) that installed ``package`` ships.

    Found with ``importlib.util.find_spec``, so the package is not imported (great_tables' import is
    slow); raises ModuleNotFoundError or FileNotFoundError naming the ``dev`` extra.
    """
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package} is not installed: pip install -e '.[dev]'")
    folder = Path(next(iter(spec.submodule_search_locations)))
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{package} ships none of {names} in {folder}: pip install -e '.[dev]'")


def _raw(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Split off the target; text columns as object dtype with NaN (pandas 3 reads them as ``str``)."""
    frame = frame.reset_index(drop=True)
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(object)
    return frame.drop(columns=target), frame[target].rename(target)


def load_penguins() -> tuple[pd.DataFrame, pd.Series]:
    """Species (Adelie, Chinstrap, Gentoo) of 344 Palmer Archipelago penguins from island, bill, flipper,
    body mass, sex and year; palmerpenguins' ``data/penguins.csv`` (CC0). 19 missing cells (sex, sizes)."""
    frame = pd.read_csv(package_file("palmerpenguins", "data/penguins.csv"))
    return _raw(frame, "species")


def load_penguins_sex() -> tuple[pd.DataFrame, pd.Series]:
    """Sex (MALE, FEMALE) of the 333 sexed penguins of palmerpenguins' ``data/penguins-raw.csv`` (CC0), the
    unabridged table: study, species, island, clutch completion, sizes and blood isotope ratios (missing
    for 14 birds). Dropped: sample number and individual ID (identifiers), region and stage (constant),
    egg date, and the free-text comments (they say e.g. "Sexing primers did not amplify")."""
    frame = pd.read_csv(package_file("palmerpenguins", "data/penguins-raw.csv"))
    frame = frame.drop(columns=["Sample Number", "Individual ID", "Region", "Stage", "Date Egg", "Comments"])
    return _raw(frame.dropna(subset=["Sex"]), "Sex")


def load_titanic() -> tuple[pd.DataFrame, pd.Series]:
    """Survival (0, 1) of 1313 Titanic passengers from class, age and sex; bokeh_sampledata's
    ``_data/titanic_all.csv`` (public domain). Age is missing for 557, class ("*") for one; name dropped."""
    frame = pd.read_csv(package_file("bokeh_sampledata", "_data/titanic_all.csv"), na_values={"class": ["*"]})
    return _raw(frame.drop(columns="name"), "survived")


def load_towny() -> tuple[pd.DataFrame, pd.Series]:
    """Kind of municipality (township, town, municipality, city, village) of 414 Ontario municipalities
    from tier, census division, location, land area, and 1996-2021 census populations, densities and
    changes; great_tables' ``data/07-towny.csv`` (from R's gt package, MIT; Statistics Canada census).
    23 missing cells (1996/2001 census). Name and website dropped (identifiers)."""
    frame = pd.read_csv(package_file("great_tables", "data/07-towny.csv"))
    return _raw(frame.drop(columns=["name", "website"]), "csd_type")


def load_mpg() -> tuple[pd.DataFrame, pd.Series]:
    """Class (suv, compact, midsize, subcompact, pickup, minivan, 2seater) of 234 cars of 1999 and 2008
    from manufacturer, engine, transmission, drive, fuel economy and fuel type; bokeh_sampledata's
    ``_data/auto-mpg2.csv`` (ggplot2's mpg, EPA fuel economy data, public domain). No missing cells.
    Model dropped (a near-identifier that names the class: "a4", "camry", "grand cherokee 4wd")."""
    frame = pd.read_csv(package_file("bokeh_sampledata", "_data/auto-mpg2.csv"), index_col=0)
    return _raw(frame.drop(columns="model"), "class")


def load_superstore() -> tuple[pd.DataFrame, pd.Series]:
    """Product category (Office Supplies, Furniture, Technology) of 9994 order lines of a fictitious US
    store from ship mode, customer segment, state, region, sales, quantity, discount and profit;
    bokeh_sampledata's ``_data/SampleSuperstore.csv[.gz]`` (Tableau's Sample Superstore, CC0). No missing
    cells. Dropped: sub-category (it names the category), country (constant), city and postal code
    (hundreds of levels, past HistGradientBoosting's 255 categories)."""
    names = ("_data/SampleSuperstore.csv.gz", "_data/SampleSuperstore.csv")  # 2024.2 ships it uncompressed
    frame = pd.read_csv(package_file("bokeh_sampledata", *names))
    return _raw(frame.drop(columns=["Sub-Category", "Country", "City", "Postal Code"]), "Category")


LOADERS = {
    "penguins": load_penguins,
    "penguins_sex": load_penguins_sex,
    "titanic": load_titanic,
    "towny": load_towny,
    "mpg": load_mpg,
    "superstore": load_superstore,
}


def datasets(max_rows: int = 2000, seed: int = 0) -> dict[str, tuple[pd.DataFrame, pd.Series, int]]:
    """Name -> (X, y, rows before subsampling); tables over ``max_rows`` rows subsampled with ``seed``."""
    found = {}
    for name, load in LOADERS.items():
        X, y = load()
        n_rows = len(X)
        if n_rows > max_rows:
            keep = np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))
            X, y = X.iloc[keep].reset_index(drop=True), y.iloc[keep].reset_index(drop=True)
        found[name] = (X, y, n_rows)
    return found


def to_category(X: pd.DataFrame) -> pd.DataFrame:
    """Non-numeric columns as ``category`` dtype: what HistGradientBoosting's "from_dtype" reads."""
    return X.astype({column: "category" for column in X.columns if not pd.api.types.is_numeric_dtype(X[column])})


def estimators(seed):
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))

    def encoded(model):
        encode = make_column_transformer(
            (numeric, make_column_selector(dtype_include="number")),
            (categorical, make_column_selector(dtype_exclude="number")),
        )
        return make_pipeline(encode, model)

    return {
        OURS: IDWAttentionClassifier(random_state=seed),
        HGB: HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed),
        "MLP (impute + one-hot + scale)": encoded(MLPClassifier(random_state=seed, max_iter=1000)),
        "LogReg (impute + one-hot + scale)": encoded(LogisticRegression(max_iter=1000)),
    }


def cross_validated(seeds, max_rows, n_jobs):
    """Accuracy of each model on each table, one 5-fold mean per seed (folds, subsamples and estimators
    seeded alike), with the failures and the seconds spent per model."""
    scores, failures, seconds = {}, {}, {}
    for seed in seeds:
        models = estimators(seed)
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        for set_name, (X, y, _) in datasets(max_rows, seed).items():
            for name, model in models.items():
                X_in = to_category(X) if name == HGB else X
                start = time.perf_counter()
                try:
                    result = cross_validate(model, X_in, y, cv=folds, n_jobs=n_jobs, error_score="raise")
                except Exception as error:  # reported in the table: e.g. raw tables before they are accepted
                    failures.setdefault(name, {})[set_name] = type(error).__name__
                else:
                    scores.setdefault(name, {}).setdefault(set_name, []).append(result["test_score"])
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return scores, failures, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=list(range(15)),
        help="seeds of the folds, the subsamples and the estimators; the means are over them (default 0-14)",
    )
    parser.add_argument("--n-jobs", type=int, default=1, help="folds fitted in parallel")
    parser.add_argument("--max-rows", type=int, default=2000, help="larger tables are subsampled to this many rows")
    args = parser.parse_args(argv)
    print(f"## Accuracy on raw tables: 5-fold stratified CV, default hyperparameters\n\n{describe()}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores, failures, seconds = cross_validated(args.seed, args.max_rows, args.n_jobs)
    data = datasets(args.max_rows, args.seed[0])
    names = list(estimators(0))
    several = len(args.seed) > 1
    if several:
        print(f"Seeds {args.seed}: mean over the seeds ± standard deviation of the seeds' 5-fold means.\n")
    print("| table (rows × columns, text columns, missing cells, classes) | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    complete = {name: len(scores.get(name, {})) == len(data) and not failures.get(name) for name in names}
    means = {}  # name -> table -> mean accuracy per seed
    for name in names:
        means[name] = {table: np.array([s.mean() for s in runs]) for table, runs in scores.get(name, {}).items()}
    for set_name, (X, y, n_rows) in data.items():
        best = max((means[name][set_name].mean() for name in names if set_name in means[name]), default=None)
        cells = []
        for name in names:
            if set_name in failures.get(name, {}):
                cells.append(f"n/a ({failures[name][set_name]})")
                continue
            spread = means[name][set_name].std() if several else scores[name][set_name][0].std()
            cell = f"{means[name][set_name].mean():.3f} ± {spread:.3f}"
            cells.append(f"**{cell}**" if means[name][set_name].mean() == best else cell)
        rows = f"{len(X)} of {n_rows}" if len(X) < n_rows else f"{len(X)}"
        n_text = sum(not pd.api.types.is_numeric_dtype(X[column]) for column in X.columns)
        shape = f"{rows} × {X.shape[1]}, {n_text}, {int(X.isna().sum().sum())}, {y.nunique()}"
        print(f"| {set_name} ({shape}) | " + " | ".join(cells) + " |")
    overall = {name: np.mean([m.mean() for m in means[name].values()]) for name in names if complete[name]}
    print("| **mean** | " + " | ".join(f"{overall[name]:.4f}" if complete[name] else "n/a" for name in names) + " |")
    print("| total time (s) | " + " | ".join(f"{seconds[name]:.1f}" for name in names) + " |")
    if several:
        print()
        for name in (OURS, HGB):
            if complete[name]:
                per_seed = np.mean(list(means[name].values()), axis=0)
                print(f"Mean of {name} seed by seed: " + ", ".join(f"{v:.4f}" for v in per_seed) + ".")
    if OURS in overall and HGB in overall:
        gap = overall[OURS] - overall[HGB]
        verdict = "meets" if gap >= 0 else "misses"
        print(f"\nMean accuracy of {OURS} − {HGB}: **{gap:+.4f}** ({verdict} the target, ≥ 0).")
    else:
        failed = len(failures.get(OURS, {}))
        print(f"\n{OURS} failed on {failed} of {len(data)} tables; the target is a mean ≥ {HGB}'s.")


if __name__ == "__main__":
    main()
