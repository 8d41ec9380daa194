"""The documentation site builds offline without a warning, and holds what the README and the estimator link to.

``make test`` builds the site once (``sphinx-build -W --keep-going -E``) and points ``PROTOATTN_DOCS_HTML`` at it;
run alone, this module builds it itself, into a temporary folder.
"""

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="the docs extra builds the documentation")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = ["model", "usage", "attention", "saving", "scaling", "cli", "limitations", "performance"]
NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    built = os.environ.get("PROTOATTN_DOCS_HTML")
    if built:
        return Path(built).resolve()
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"the docs build warned or failed:\n{result.stderr}"
    return out


class _Page(HTMLParser):
    """The ids, links, images and text of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.ids, self.links, self.images, self._text = set(), [], [], []
        self.feed(text)
        self.text = "".join(self._text)

    def handle_data(self, data):
        self._text.append(data)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))


def _page(html, name):
    path = html / name
    assert path.is_file(), f"{name} was not built"
    return _Page(path.read_text(encoding="utf-8"))


def test_api_page_documents_the_public_api(html):
    ids = _page(html, "api.html").ids
    # The estimator's HTML repr links to api.html#protoattn.IDWAttentionClassifier.
    expected = {
        "protoattn.IDWAttentionClassifier",
        "protoattn.IDWAttentionClassifier.fit",
        "protoattn.IDWAttentionClassifier.explain",
        "protoattn.IDWAttentionClassifier.add_prototype",
        "protoattn.IDWAttentionClassifier.preview_patch",
        "protoattn.PatchReport",
        "protoattn.IDWAttentionClassifier.save",
        "protoattn.Explanation",
        "protoattn.InconsistentVersionWarning",
        "protoattn.attention.idw",
        "protoattn.attention.ATTENTIONS",
        "protoattn.plotting.plot_prototypes",
        "protoattn.plotting.plot_decision_regions",
        "protoattn.plotting.plot_attention",
        "protoattn.plotting.plot_explanation",
        "protoattn.export.export_onnx",
        "protoattn.datasets.load_moons_split",
        "protoattn.datasets.load_tabular",
    }
    assert expected <= ids, sorted(expected - ids)


def test_every_guide_page_and_notebook_is_in_the_navigation(html):
    links = set(_page(html, "index.html").links)
    for name in [*GUIDE, "notebooks", "api", "changelog"]:
        assert f"{name}.html" in links, name
    notebook_links = set(_page(html, "notebooks.html").links)
    assert len(NOTEBOOKS) == 5
    for name in NOTEBOOKS:
        assert f"notebooks/{name}.html" in notebook_links, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_rendered_with_their_stored_figures(html, name):
    page = _page(html, f"notebooks/{name}.html")
    assert page.images, "the notebook's figures come from its committed outputs"
    for src in page.images:
        assert (html / "notebooks" / src).resolve().is_file(), src


def test_command_line_reference_lists_every_subcommand(html):
    from protoattn.cli import build_parser

    page = _page(html, "cli.html")
    (subparsers,) = [action for action in build_parser()._actions if action.dest == "command"]
    assert {f"protoattn-{command}" for command in subparsers.choices} <= page.ids  # one section each
    assert "protoattn fit iris.csv --target species" in page.text  # the README's session, included


def test_readme_limitations_and_changelog_are_included(html):
    limitations = _page(html, "limitations.html")
    assert "Export of numeric features only" in limitations.text
    assert "usage.html" in limitations.links  # the README's link to docs/usage.md, made relative to docs/
    assert "[Unreleased]" in _page(html, "changelog.html").text
