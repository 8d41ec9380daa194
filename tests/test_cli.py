"""The protoattn command, end to end on CSV files the tests write, in subprocesses."""

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from protoattn import IDWAttentionClassifier
from protoattn.cli import main

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def run(*args, check=True, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", "protoattn", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    X, y = load_iris(return_X_y=True, as_frame=True)
    data = X.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    data["species"] = np.array(["setosa", "versicolor", "virginica"])[y]
    data.to_csv(folder / "iris.csv", index=False)
    data.drop(columns="species").iloc[:10].to_csv(folder / "new.csv", index=False)
    model = folder / "iris.model"
    fitted = run("fit", folder / "iris.csv", "--target", "species", "--model", model, "--max-epochs", 30)
    return folder, model, fitted


def test_fit_reports_accuracy_and_prototypes_and_writes_a_loadable_model(files):
    folder, model, fitted = files
    assert "held-out accuracy: 0.9" in fitted.stdout or "held-out accuracy: 1.0" in fitted.stdout
    assert "\r" not in fitted.stderr and "epoch" not in fitted.stderr  # no progress bar into a pipe
    clf = IDWAttentionClassifier.load(model)
    labels, counts = np.unique(clf.prototype_labels_, return_counts=True)
    per_class = ", ".join(f"{c}: {n}" for c, n in zip(labels, counts, strict=True))
    assert f"prototypes per class: {per_class}" in fitted.stdout and len(clf.prototypes_) == 30
    assert list(clf.feature_names_in_) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert clf.metric == "diagonal" and np.all(clf.feature_scales_ != 1)  # learned by default


def test_fit_takes_the_metric(files):
    folder, _, _ = files
    model = folder / "euclidean.model"
    run("fit", folder / "iris.csv", "--target", "species", "--model", model, "--max-epochs", 2, "--metric", "euclidean")
    np.testing.assert_array_equal(IDWAttentionClassifier.load(model).feature_scales_, np.ones(4))


def test_predict_writes_labels_or_probabilities(files):
    folder, model, _ = files
    clf = IDWAttentionClassifier.load(model)
    new = pd.read_csv(folder / "new.csv")
    labels = run("predict", model, folder / "new.csv").stdout.splitlines()
    assert labels[0] == "prediction" and labels[1:] == list(clf.predict(new))
    run("predict", model, folder / "new.csv", "--proba", "--output", folder / "proba.csv")
    proba = pd.read_csv(folder / "proba.csv")
    assert list(proba.columns) == ["proba_setosa", "proba_versicolor", "proba_virginica"]
    np.testing.assert_allclose(proba.to_numpy(), clf.predict_proba(new), rtol=1e-5, atol=1e-6)  # 6 digits


def test_explain_lists_the_prototypes_behind_each_row(files):
    folder, model, _ = files
    out = run("explain", model, folder / "new.csv", "--top-k", 2, "--output", folder / "why.csv")
    why = pd.read_csv(folder / "why.csv")
    assert len(why) == 20 and set(why["row"]) == set(range(1, 11)) and "wrote 20 rows" in out.stderr
    clf = IDWAttentionClassifier.load(model)
    expected = clf.explain(pd.read_csv(folder / "new.csv"), top_k=2)
    np.testing.assert_array_equal(why["prototype"].to_numpy(), expected.prototype_indices.ravel())


def test_prototypes_table_has_feature_columns(files):
    _, model, _ = files
    table = pd.read_csv(__import__("io").StringIO(run("prototypes", model).stdout))
    assert list(table.columns[:3]) == ["prototype", "label", "patched"]
    np.testing.assert_allclose(table.iloc[:, 3:].to_numpy(), IDWAttentionClassifier.load(model).prototypes_, rtol=1e-5)


def test_patch_flips_a_row_and_rewrites_the_model(files, tmp_path):
    folder, model, _ = files
    patched = tmp_path / "patched.model"
    patched.write_bytes(model.read_bytes())
    out = run("patch", patched, "--row", "5.0,3.4,1.5,0.2", "--label", "virginica")
    assert "added prototype 30" in out.stdout and "now virginica" in out.stdout
    clf = IDWAttentionClassifier.load(patched)
    row = pd.DataFrame([[5.0, 3.4, 1.5, 0.2]], columns=clf.feature_names_in_)
    assert clf.predict(row)[0] == "virginica" and clf.patched_prototypes_[30]
    out = run("patch", patched, "--row", "6.0,3.0,4.5,1.5", "--label", "setosa", "--replace", 0)
    assert "replaced prototype 0" in out.stdout
    assert len(IDWAttentionClassifier.load(patched).prototypes_) == 31


def test_patch_preview_writes_nothing_and_lists_what_would_change(files, tmp_path):
    folder, model, _ = files
    original = model.read_bytes()
    out = run("patch", model, "--row", "5.0,3.4,1.5,0.2", "--label", "virginica", "--preview", folder / "iris.csv")
    assert model.read_bytes() == original and "nothing written" in out.stdout
    assert "will be virginica; radius" in out.stdout and "rows of" in out.stdout
    clf = IDWAttentionClassifier.load(model)
    X = pd.read_csv(folder / "iris.csv").drop(columns="species")
    report = clf.preview_patch(pd.Series([5.0, 3.4, 1.5, 0.2], index=X.columns), "virginica", X)
    assert f"{len(report.changed)} of 150 rows" in out.stdout
    # --output writes the patched model elsewhere, with the same changes; MODEL stays as it was.
    new = tmp_path / "patched.model"
    out = run("patch", model, "--row", "5.0,3.4,1.5,0.2", "--label", "virginica", "--output", new)
    assert model.read_bytes() == original and f"model written to {new}" in out.stdout
    patched = IDWAttentionClassifier.load(new)
    changed = np.flatnonzero(patched.predict(X) != clf.predict(X))
    np.testing.assert_array_equal(changed, report.changed)
    assert patched.patches_["radius"][-1] == report.radius
    run("patch", model, "--row", "5.0,3.4,1.5,0.2", "--label", "virginica", "--radius", "none", "--output", new)
    assert IDWAttentionClassifier.load(new).prototype_reach_[-1] == np.inf
    bad = run("patch", model, "--row", "5.0,3.4,1.5,0.2", "--label", "virginica", "--radius", "-1", check=False)
    assert bad.returncode != 0 and "--radius must be" in bad.stderr


def test_export_onnx_from_the_command_line(files):
    folder, model, _ = files
    pytest.importorskip("onnxruntime")
    out = run("export-onnx", model, folder / "iris.onnx")
    assert (folder / "iris.onnx").stat().st_size > 0 and "wrote" in out.stdout


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda f, m: ["fit", f / "nope.csv", "--target", "y", "--model", f / "x.model"], "no such file"),
        (lambda f, m: ["fit", f / "iris.csv", "--target", "colour", "--model", f / "x.model"], "no target column"),
        (
            lambda f, m: ["fit", f / "iris.csv", "--target", "species", "--model", f / "x.model", "--drop", "nope"],
            "--drop",
        ),
        (lambda f, m: ["predict", m, f / "short.csv"], "missing column"),
        (lambda f, m: ["predict", f / "iris.csv", f / "new.csv"], "model"),
        (lambda f, m: ["patch", m, "--row", "1,2", "--label", "setosa"], "--row has 2 values"),
        (lambda f, m: ["patch", m, "--row", "1,2,3,x", "--label", "setosa"], "is not a number"),
        (lambda f, m: ["patch", m, "--row", "1,2,3,4", "--label", "rose"], "not a class"),
        (lambda f, m: ["fit", f / "iris.csv", "--target", "species", "--model", f / "x", "--power", "-1"], "power"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(files, make_args, message, capsys):
    folder, model, _ = files
    pd.DataFrame({"sepal_length": [1.0, "abc"], "species": ["a", "b"]}).to_csv(folder / "bad.csv", index=False)
    pd.DataFrame({"sepal_length": [1.0]}).to_csv(folder / "short.csv", index=False)
    assert main([str(a) for a in make_args(folder, model)]) == 2  # in-process: the subprocess path is below
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protoattn: error:") and message in lines[0]


def test_a_bad_file_in_a_real_process_ends_without_traceback(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    result = run("fit", tmp_path / "empty.csv", "--target", "y", "--model", tmp_path / "m", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("protoattn: error:") and len(result.stderr.strip().splitlines()) == 1


def test_help_describes_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ["fit", "predict", "explain", "prototypes", "patch", "export-onnx", "demo"]:
        assert name in text
        with pytest.raises(SystemExit):
            main([name, "--help"])
        assert "usage: protoattn " + name in capsys.readouterr().out


def test_prototypes_png_draws_them(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _, model, _ = files
    assert main(["prototypes", str(model), "--png", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_version_and_usage_errors_import_neither_torch_nor_sklearn():
    # They answer at once: torch and scikit-learn take seconds to import, and only a command needs them.
    script = (
        "import sys\n"
        "from protoattn.cli import main\n"
        "for argv in (['--help'], ['--version'], ['fit', '--help'], ['fit'], ['frobnicate']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import protoattn\n"
        "protoattn.__version__\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "protoattn", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: protoattn" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "protoattn.cli" in imported and not imported & {"torch", "sklearn"}


def test_the_package_still_exports_its_names_on_first_use():
    import protoattn

    assert protoattn.IDWAttentionClassifier.__name__ == "IDWAttentionClassifier"
    assert set(protoattn.__all__) <= set(dir(protoattn))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        protoattn.nonexistent  # noqa: B018


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "stderr, quiet, bar",
    [(_Terminal, False, True), (io.StringIO, False, False), (_Terminal, True, False)],
    ids=["terminal", "log", "quiet"],
)
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(files, tmp_path, monkeypatch, capsys, stderr, quiet, bar):
    folder, _, _ = files
    monkeypatch.setattr(sys, "stderr", stderr())
    argv = ["fit", str(folder / "iris.csv"), "--target", "species", "--model", str(tmp_path / "m"), "--max-epochs", "5"]
    assert main(argv + ["--quiet"] * quiet) == 0
    drawn = sys.stderr.getvalue()
    assert ("5/5" in drawn and "\r" in drawn) == bar and (drawn == "") == (not bar)
    assert "model written to" in capsys.readouterr().out  # the report is not progress: --quiet keeps it


def test_quiet_drops_the_messages_on_stderr(files, tmp_path):
    folder, model, _ = files
    loud = run("predict", model, folder / "new.csv", "--output", tmp_path / "a.csv")
    quiet = run("predict", model, folder / "new.csv", "--output", tmp_path / "b.csv", "--quiet")
    assert "wrote 10 rows" in loud.stderr and quiet.stderr == ""
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_version(capsys):
    from protoattn import __version__

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"protoattn {__version__}"


def _one_error_line(capsys, *parts):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("protoattn: error:"), lines
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("where", ["nodir/x.model", "folder"])
def test_fit_checks_the_model_path_before_training(files, tmp_path, capsys, where):
    folder, _, _ = files
    (tmp_path / "folder").mkdir()
    model = tmp_path / where
    assert main(["fit", str(folder / "iris.csv"), "--target", "species", "--model", str(model)]) == 2
    line = _one_error_line(capsys, f"--model {model}")
    assert ".partial" not in line and ("no folder" in line or "is a folder" in line)
    assert "epoch" not in capsys.readouterr().err  # refused before the first epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not list((tmp_path / "folder").iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions that bind")
def test_fit_refuses_a_folder_it_cannot_write_in(files, tmp_path, capsys):
    folder, _, _ = files
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["fit", str(folder / "iris.csv"), "--target", "species", "--model", str(locked / "m")]) == 2
    _one_error_line(capsys, "cannot write in")


@pytest.mark.parametrize("test_size", ["-1", "1", "1.5", "nan"])
def test_fit_refuses_a_test_size_that_is_not_a_share(files, capsys, test_size, tmp_path):
    folder, _, _ = files
    args = ["fit", str(folder / "iris.csv"), "--target", "species", "--model", str(tmp_path / "m")]
    assert main([*args, "--test-size", test_size]) == 2
    _one_error_line(capsys, "--test-size must be a share of the rows")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "labels, test_size, reason",
    [
        (["a", "a", "a", "b", "b", "c"], "0.2", "class 'c' has only 1 row"),
        (["a", "a", "b", "b", "c", "c"], "0.2", "holds out 2 row(s), fewer than the 3 classes"),
        (["a", "a", "b", "b", "c", "c"], "0.9", "leaves 0 row(s) to train on"),
    ],
)
def test_fit_refuses_data_too_small_to_hold_out_every_class(tmp_path, capsys, labels, test_size, reason):
    data = pd.DataFrame({"x": np.arange(len(labels), dtype=float), "y": labels})
    data.to_csv(tmp_path / "small.csv", index=False)
    args = ["fit", str(tmp_path / "small.csv"), "--target", "y", "--model", str(tmp_path / "m"), "--max-epochs", "2"]
    assert main([*args, "--test-size", test_size]) == 2
    _one_error_line(capsys, "too few to hold out a row of every class", reason, "--test-size 0")
    assert not (tmp_path / "m").exists()
    assert main([*args, "--test-size", "0"]) == 0  # every row trains: every class is in the model
    assert list(IDWAttentionClassifier.load(tmp_path / "m").classes_) == sorted(set(labels))


def test_predict_refuses_rows_too_large_instead_of_writing_empty_cells(files, tmp_path, capsys):
    _, model, _ = files
    rows = pd.DataFrame([[5.0, 3.0, 1.5, 0.2], [1e160, 3.0, 1.5, 0.2]], columns=COLUMNS)
    rows.to_csv(tmp_path / "big.csv", index=False)
    assert main(["predict", str(model), str(tmp_path / "big.csv")]) == 2
    _one_error_line(capsys, "row 1", "too large")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_predict_with_a_fifo_as_model_ends_at_once(files, tmp_path):
    folder, _, _ = files
    fifo = tmp_path / "model"
    os.mkfifo(fifo)
    try:
        result = run("predict", fifo, folder / "new.csv", check=False, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("protoattn predict blocked on a FIFO")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("protoattn: error:") and "not a regular file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_raw_csv_with_text_columns_and_empty_cells(tmp_path, capsys):
    # No preprocessing option: text columns are categories, empty cells missing, units as they are.
    from palmerpenguins import load_penguins

    table = load_penguins().assign(note="field note")
    table.to_csv(tmp_path / "penguins.csv", index=False)
    table.drop(columns="species").iloc[:3].to_csv(tmp_path / "new.csv", index=False)
    model = tmp_path / "penguins.protoattn"
    assert main(["fit", str(tmp_path / "penguins.csv"), "--target", "species", "--model", str(model),
                 "--drop", "note", "--n-prototypes", "6", "--max-epochs", "30", "--quiet"]) == 0  # fmt: skip
    assert "held-out accuracy" in capsys.readouterr().out
    assert main(["predict", str(model), str(tmp_path / "new.csv")]) == 0
    assert capsys.readouterr().out.split() == ["prediction", "Adelie", "Adelie", "Adelie"]
    assert main(["prototypes", str(model)]) == 0
    prototypes = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(prototypes["island"]) <= {"Biscoe", "Dream", "Torgersen"} and "note" not in prototypes
    assert prototypes["body_mass_g"].between(table["body_mass_g"].min(), table["body_mass_g"].max()).all()
    assert main(["explain", str(model), str(tmp_path / "new.csv"), "--top-k", "1"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 3
    row = "Dream,50.0,,200,,female,2008"  # empty cells: missing values
    assert main(["patch", str(model), "--row", row, "--label", "Gentoo"]) == 0
    out, err = capsys.readouterr()
    assert "now Gentoo" in out and err == ""
    assert main(["patch", str(model), "--row", "Dream,50.0,17,200,40000,female,2008", "--label", "Gentoo"]) == 0
    assert "far outside the training data (body_mass_g" in capsys.readouterr().err
