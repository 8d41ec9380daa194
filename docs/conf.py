"""Sphinx configuration: ``make docs`` builds the site offline into ``docs/_build/html``.

The notebooks are rendered from their committed outputs (``notebooks/execute.py`` runs them), never
executed here, so a build needs only the ``docs`` extra: no kernel, no pandoc, no network.
"""

import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document this checkout, whether or not (and wherever) protoattn is installed.
sys.path.insert(0, str(ROOT))

import protoattn  # noqa: E402

project = "protoattn"
author = "the protoattn developers"
copyright = "the protoattn developers, BSD-3-Clause"
version = release = protoattn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_nb",  # Markdown pages and .ipynb notebooks (it brings myst_parser)
    "sphinxarg.ext",  # the command line's reference, from protoattn.cli.build_parser
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "conftest.py", "Thumbs.db", ".DS_Store"]

# Sphinx reads only its source folder, so the notebooks are copied in (git ignores the copies). A copy is
# rewritten only when its notebook changed, so incremental builds skip the rest.
_copies = DOCS / "notebooks"
_copies.mkdir(exist_ok=True)
_notebooks = {path.name: path for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
for stale in _copies.glob("*.ipynb"):
    if stale.name not in _notebooks:
        stale.unlink()
for name, path in _notebooks.items():
    copy = _copies / name
    if not copy.exists() or copy.read_bytes() != path.read_bytes():
        shutil.copyfile(path, copy)

# -- myst-nb: show the committed outputs, run nothing --------------------------------------------------
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc and numpydoc ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections state the types
numpydoc_show_class_members = False  # the API page lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# -- HTML ----------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"protoattn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


# -- docstrings ----------------------------------------------------------------------------------------
# scikit-learn's convention "of shape (n_features_in_,)" names a fitted attribute, but to reST a bare
# word ending in "_" is a link to a target of that name. Inside "shape (...)" such words become literals.
_SHAPE = re.compile(r"shape \(([^)]*)\)")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?![`\w])")


def _literal_attributes_in_shapes(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        lines[i] = _SHAPE.sub(lambda m: "shape (" + _TRAILING_UNDERSCORE.sub(r"``\1``", m.group(1)) + ")", line)


def setup(app):
    app.connect("autodoc-process-docstring", _literal_attributes_in_shapes)
