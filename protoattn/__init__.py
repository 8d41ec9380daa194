"""protoattn: interpretable classification by attention over learned prototypes.

The estimator :class:`IDWAttentionClassifier` implements inverse distance weighting attention
(McCarter, "Inverse distance weighting attention", arXiv:2310.18805) behind the scikit-learn API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The public names below live in modules that import torch and scikit-learn, which take seconds to
# import: they are imported on first use (PEP 562), so that ``protoattn --help`` and
# ``protoattn.__version__`` answer at once.
_LAZY = {
    "ATTENTIONS": "attention",
    "Explanation": "classifier",
    "IDWAttentionClassifier": "classifier",
    "InconsistentVersionWarning": "_persistence",
}

__all__ = [
    "ATTENTIONS",
    "Explanation",
    "IDWAttentionClassifier",
    "InconsistentVersionWarning",
    "__version__",
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from ._persistence import InconsistentVersionWarning
    from .attention import ATTENTIONS
    from .classifier import Explanation, IDWAttentionClassifier


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})
