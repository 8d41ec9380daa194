"""The ``protoattn`` command: fit, predict, explain, inspect and patch models from CSV files.

Every subcommand is also ``python -m protoattn SUBCOMMAND``. Models are written in the safe model
format of :meth:`IDWAttentionClassifier.save` (data only, no pickle). Bad input ends with a one-line
``protoattn: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import secrets
import sys

import numpy as np

from . import __version__

# Only numpy is imported up front: torch, scikit-learn and pandas take seconds, and are imported by the
# commands that need them, so that --help, --version and usage errors answer at once.

EXIT_USAGE = 2


class CommandError(Exception):
    """A problem with the user's files or arguments: reported in one line, exit code 2."""


# ------------------------------------------------------------------------------------------- files


def _read_csv(path):
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CommandError(f"{path}: not a readable CSV file ({str(error).splitlines()[0]})") from None
    if frame.empty:
        raise CommandError(f"{path}: no data rows")
    return frame


def _columns(frame, columns, path):
    """The given columns of a CSV as they are (numbers, text, empty cells): the model reads them."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CommandError(f"{path}: missing column(s) {', '.join(map(str, missing))}")
    return frame[list(columns)]


def _check_output(path):
    """Refuse, before any training, a model path that cannot be written: save writes a file beside
    the (link's) target and renames it, so that folder must exist and take a new file."""
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise CommandError(f"--model {path}: is a folder; give a file name")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise CommandError(f"--model {path}: no folder {folder} to write the model in")
    probe = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(4)}.probe")
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as error:
        raise CommandError(f"--model {path}: cannot write in {folder} ({error.strerror})") from None


def _check_hold_out(y, test_size, path):
    """Refuse data too small to hold out a row of every class (and keep one of each to train on):
    the split is stratified, and a model must not be saved without a class of the data."""
    labels, counts = np.unique(y, return_counts=True)
    n_test = math.ceil(test_size * len(y))
    n_train = len(y) - n_test
    if counts.min() < 2:
        reason = f"class {labels[counts.argmin()]!r} has only 1 row, which cannot be both trained on and held out"
    elif n_test < len(labels):
        reason = f"--test-size {test_size:g} holds out {n_test} row(s), fewer than the {len(labels)} classes"
    elif n_train < len(labels):
        reason = f"--test-size {test_size:g} leaves {n_train} row(s) to train on, fewer than the {len(labels)} classes"
    else:
        return
    raise CommandError(
        f"{path}: {len(y)} rows of {len(labels)} classes are too few to hold out a row of every class: {reason}. "
        "Add rows, change --test-size, or pass --test-size 0 to train on every row without a held-out score"
    )


def _load_model(path):
    from . import IDWAttentionClassifier

    try:
        return IDWAttentionClassifier.load(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such model file") from None


def _features(clf, frame, path):
    names = getattr(clf, "feature_names_in_", None)
    if names is None:
        raise CommandError(f"{path}: the model has no feature names; fit it with this command")
    return _columns(frame, [str(n) for n in names], path)


def _note(args, message):
    """A message for the person at the terminal, on stderr; ``--quiet`` drops it (results stay on stdout)."""
    if not args.quiet:
        print(message, file=sys.stderr)


def _write_table(frame, args):
    if args.output is None:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    else:
        frame.to_csv(args.output, index=False, float_format="%.6g")
        _note(args, f"wrote {len(frame)} rows to {args.output}")


def _prototypes_per_class(clf):
    labels, counts = np.unique(clf.prototype_labels_, return_counts=True)
    return "prototypes per class: " + ", ".join(f"{c}: {n}" for c, n in zip(labels, counts, strict=True))


class _EpochProgress:
    """A stream for the estimator's verbose output (``epoch N: loss ...`` lines) that advances a tqdm
    bar on stderr instead. The bar is drawn on a terminal only (tqdm's ``disable=None``), so that logs
    and pipes do not fill up with carriage returns, and never with ``quiet``."""

    def __init__(self, total, quiet=False):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="epoch", file=sys.stderr, disable=True if quiet else None)

    def write(self, text):
        match = re.match(r"epoch (\d+): (.*)", text.strip())
        if match:
            self.bar.set_postfix_str(match.group(2), refresh=False)
            self.bar.update(int(match.group(1)) - self.bar.n)
        return len(text)

    def flush(self):
        pass

    @contextlib.contextmanager
    def capturing(self):
        """Route the estimator's prints here for the duration of the block, then close the bar."""
        try:
            with contextlib.redirect_stdout(self):
                yield
        finally:
            self.bar.close()


# ------------------------------------------------------------------------------------- subcommands


def fit(args):
    """Fit on a CSV, report held-out accuracy and prototypes per class, write the model."""
    from sklearn.model_selection import train_test_split

    from . import IDWAttentionClassifier

    if not 0 <= args.test_size < 1:
        raise CommandError(f"--test-size must be a share of the rows, at least 0 and below 1; got {args.test_size:g}")
    _check_output(args.model)  # before training, which may take long
    frame = _read_csv(args.data)
    if args.target not in frame.columns:
        raise CommandError(f"{args.data}: no target column {args.target!r} (columns: {', '.join(frame.columns)})")
    y = frame[args.target].to_numpy()
    if frame[args.target].isna().any():
        raise CommandError(f"{args.data}: the target column {args.target!r} has empty cells")
    unknown = [c for c in args.drop if c not in frame.columns]
    if unknown:
        raise CommandError(f"{args.data}: --drop names no column {', '.join(map(repr, unknown))}")
    X = frame.drop(columns=[args.target, *args.drop])
    if X.shape[1] == 0:
        raise CommandError(f"{args.data}: no feature column left besides the target")
    params = {
        "attention": args.attention,
        "n_prototypes": args.n_prototypes,
        "metric": args.metric,
        "random_state": args.seed,
    }
    if args.power is not None:
        params["power"] = args.power
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    clf = IDWAttentionClassifier(**params, verbose=1)
    if args.test_size > 0:
        _check_hold_out(y, args.test_size, args.data)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, stratify=y, random_state=args.seed
        )
    else:
        X_train, y_train, X_test = X, y, None
    with _EpochProgress(clf.max_epochs, quiet=args.quiet).capturing():
        clf.fit(X_train, y_train)
    print(f"fitted {len(clf.prototypes_)} prototypes on {len(X_train)} rows in {clf.n_iter_} epochs")
    if X_test is not None:
        print(f"held-out accuracy: {clf.score(X_test, y_test):.4f} on {len(X_test)} rows")
    print(_prototypes_per_class(clf))
    clf.verbose = 0
    clf.save(args.model)
    print(f"model written to {args.model}")


def predict(args):
    """Predictions (or probabilities) for each row of a CSV."""
    import pandas as pd

    clf = _load_model(args.model)
    X = _features(clf, _read_csv(args.data), args.data)
    if args.proba:
        table = pd.DataFrame(clf.predict_proba(X), columns=[f"proba_{c}" for c in clf.classes_])
    else:
        table = pd.DataFrame({"prediction": clf.predict(X)})
    _write_table(table, args)


def explain(args):
    """The top-k prototypes behind each row's prediction."""
    clf = _load_model(args.model)
    X = _features(clf, _read_csv(args.data), args.data)
    table = clf.explain(X, top_k=args.top_k).to_frame().rename(columns={"sample": "row"})
    table["row"] += 1
    _write_table(table, args)


def prototypes(args):
    """The prototypes as a table (one row each), or a picture."""

    clf = _load_model(args.model)
    if args.png:
        from .plotting import plot_prototypes

        plot_prototypes(clf).savefig(args.png)
        _note(args, f"wrote {args.png}")
        return
    table = clf.prototypes_frame()  # in the CSV's units and categories
    features = [c for c in table.columns if c not in ("label", "patched")]
    table = table[["label", "patched", *features]]
    table.insert(0, "prototype", np.arange(len(table)))
    _write_table(table, args)


def patch(args):
    """Add (or replace) a prototype so that one row is predicted as the given label."""
    import pandas as pd

    clf = _load_model(args.model)
    names = [str(n) for n in getattr(clf, "feature_names_in_", range(clf.n_features_in_))]
    values = args.row.split(",")
    if len(values) != len(names):
        raise CommandError(f"--row has {len(values)} values; the model needs {len(names)} ({', '.join(names)})")
    row = pd.DataFrame([[v.strip() or None for v in values]], columns=names)
    for j, name in enumerate(names):  # numeric features as numbers, empty cells as missing
        if not clf.is_categorical_[j]:
            number = pd.to_numeric(row[name], errors="coerce")
            if number.isna().iloc[0] and row[name].notna().iloc[0]:
                raise CommandError(f"--row: {row[name].iloc[0]!r} for {name!r} is not a number")
            row[name] = number.astype(float)
    matches = [c for c in clf.classes_ if str(c) == args.label]
    if not matches:
        raise CommandError(f"--label {args.label!r} is not a class of the model ({', '.join(map(str, clf.classes_))})")
    _warn_if_far(clf, row)
    radius = _radius(args.radius)
    label, before = matches[0], clf.predict(row)[0]
    checked = _features(clf, _read_csv(args.preview), args.preview) if args.preview else row
    try:
        report = clf.preview_patch(row.iloc[0], label, checked, margin=args.margin, radius=radius, replace=args.replace)
    except ValueError as error:
        raise CommandError(f"cannot patch: {error}") from None
    reach = "unbounded" if math.isinf(report.radius) else f"{report.radius:.4g}"
    print(f"patch: the row was predicted {before}, will be {label}; radius {reach} (the model's distance)")
    if args.preview:
        frame = report.to_frame()
        frame["row"] += 1  # rows of the CSV, counted from 1
        print(f"{len(frame)} of {len(report.distances)} rows of {args.preview} would change:")
        if len(frame):
            print(frame.to_string(index=False))
        print("--preview: nothing written")
        return
    output = args.output or args.model
    if args.output:
        _check_output(output)
    index = clf.add_prototype(row.iloc[0], label, margin=args.margin, radius=radius, replace=args.replace)
    clf.save(output)
    action = "replaced" if args.replace is not None else "added"
    print(f"{action} prototype {index}: the row was predicted {before}, now {clf.predict(row)[0]}")
    print(f"model written to {output} ({len(clf.prototypes_)} prototypes)")


def _radius(text):
    """--radius: a positive number, "auto" or "none"."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f'--radius must be a positive number, "auto" or "none"; got {text!r}') from None
    if not value > 0:
        raise CommandError(f'--radius must be a positive number, "auto" or "none"; got {text!r}')
    return value


def _warn_if_far(clf, row, limit=4.0):
    """Say so when the row's numbers lie far from the training data: a patch there is unusual."""
    from . import _tables

    numeric = ~clf.is_categorical_
    values = row.to_numpy(dtype=object)[0, numeric].astype(float)
    logged = _tables.to_log(values, clf.log_units_[numeric])  # load gives older files log_units_ of 0
    z = np.abs(logged - clf.feature_means_[numeric]) / clf.feature_stds_[numeric]
    far = np.flatnonzero(z > limit)
    if far.size:
        names = np.asarray(row.columns)[numeric][far]
        print(
            f"protoattn: warning: the row lies far outside the training data ({', '.join(map(str, names))}: "
            f"more than {limit:g} standard deviations from the training mean)",
            file=sys.stderr,
        )


def export_onnx(args):
    """Export the fitted network to ONNX."""
    from .export import export_onnx as export

    export(_load_model(args.model), args.output, dtype=args.dtype)
    print(f"wrote {args.output}")


def demo(args):
    """Fit on sklearn's digits, explain one prediction, patch one mistake."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from . import IDWAttentionClassifier

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    clf = IDWAttentionClassifier(random_state=args.seed).fit(X_train, y_train)
    print(f"digits: {len(X_train)} training / {len(X_test)} test images of 8x8 pixels")
    print(f"fitted {len(clf.prototypes_)} prototypes in {clf.n_iter_} epochs (power p = {clf.power_:.1f})")
    print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
    print(_prototypes_per_class(clf))

    e = clf.explain(X_test[:1], top_k=3)
    print(f"\nwhy test image 0 (true {y_test[0]}) is predicted {e.predicted[0]}:")
    for i, w, c in zip(e.prototype_indices[0], e.weights[0], e.contributions[0], strict=True):
        print(f"  prototype {i:3d} (class {clf.prototype_labels_[i]}): weight {w:.3f}, contribution {c:+.3f}")
    print(f"  logit of class {e.predicted[0]} = sum over all prototypes = {e.logit[0]:.3f}")

    before = clf.predict(X_test)
    wrong = np.flatnonzero(before != y_test)
    if len(wrong) == 0:
        print("\nno test image is misclassified: nothing to patch")
        return
    i = wrong[0]
    index = clf.add_prototype(X_test[i], y_test[i])
    after = clf.predict(X_test)
    changed = np.count_nonzero(np.delete(after != before, i))
    print(f"\ntest image {i} (true {y_test[i]}) was predicted {before[i]}")
    print(f"add_prototype -> prototype {index}; now predicted {after[i]}")
    print(f"other test predictions changed: {changed} of {len(X_test) - 1}")
    print(f"test accuracy after the patch: {clf.score(X_test, y_test):.4f}")


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protoattn",
        description="Interpretable classification by inverse distance weighting attention over prototypes.",
        epilog="Run 'protoattn SUBCOMMAND --help' for the options of each subcommand.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or messages on stderr (errors excepted)"
    )

    def command(name, run, help, **kwargs):
        p = commands.add_parser(name, help=help, description=run.__doc__, parents=[common], **kwargs)
        p.set_defaults(run=run)
        return p

    p = command("fit", fit, "fit a model on a CSV file and save it")
    p.add_argument(
        "data",
        metavar="DATA.csv",
        help="CSV with a header row; every column but the target (and --drop) is a feature, as it is: text "
        "columns are categories, empty cells missing values, numbers in any units",
    )
    p.add_argument("--target", required=True, metavar="COLUMN", help="name of the label column")
    p.add_argument("--drop", nargs="+", default=[], metavar="COLUMN", help="columns to leave out (an id, a note)")
    p.add_argument("--model", required=True, metavar="MODEL", help="where to write the model")
    p.add_argument("--attention", default="idw", help="attention score (default idw)")
    p.add_argument("--n-prototypes", type=int, default=None, metavar="N", help="default: 10 per class")
    p.add_argument("--power", type=float, default=None, metavar="P", help="default: auto")
    p.add_argument(
        "--metric", choices=["diagonal", "euclidean"], default="diagonal", help="learn per-feature scales (default)"
    )
    p.add_argument("--max-epochs", type=int, default=None, metavar="N", help="default: the estimator's")
    p.add_argument(
        "--test-size",
        type=float,
        default=0.2,
        metavar="F",
        help="held-out share of the rows, stratified by class, in [0, 1) (default 0.2; 0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")

    p = command("predict", predict, "predict the rows of a CSV file")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("data", metavar="DATA.csv", help="CSV with the model's feature columns (others are ignored)")
    p.add_argument("--proba", action="store_true", help="print class probabilities instead of labels")
    p.add_argument("--output", metavar="OUT.csv", help="write here instead of stdout")

    p = command("explain", explain, "show the prototypes behind each prediction")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("data", metavar="DATA.csv")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="prototypes per row (default 3)")
    p.add_argument("--output", metavar="OUT.csv", help="write here instead of stdout")

    p = command("prototypes", prototypes, "list the prototypes (or draw them)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--png", metavar="OUT.png", help="draw them with protoattn.plotting instead")
    p.add_argument("--output", metavar="OUT.csv", help="write the table here instead of stdout")

    p = command("patch", patch, "add a prototype so that a row gets a label; rewrites MODEL (or writes --output)")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--row", required=True, metavar="V1,V2,...", help="feature values, comma-separated")
    p.add_argument("--label", required=True, metavar="L", help="the label the row must get")
    p.add_argument("--replace", type=int, default=None, metavar="I", help="overwrite prototype I instead")
    p.add_argument("--margin", type=float, default=1.0, help="logit margin at the row (default 1)")
    p.add_argument(
        "--radius",
        default="auto",
        metavar="R",
        help="the patch's reach in the model's distance: no prediction farther changes (a number, \"auto\": "
        'half the distance to the nearest prototype of another class, the default, or "none": unbounded)',
    )
    p.add_argument("--preview", metavar="DATA.csv", help="list the rows of DATA.csv that would change; write nothing")
    p.add_argument("--output", metavar="NEW", help="write the patched model here instead of rewriting MODEL")

    p = command("export-onnx", export_onnx, "export the model's network to ONNX")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("output", metavar="OUT.onnx")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")

    p = command("demo", demo, "fit, explain and patch on sklearn's digits")
    p.add_argument("--seed", type=int, default=0, help="random_state of the classifier (default 0)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (CommandError, ValueError, TypeError, OSError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"protoattn: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
