"""protoattn: interpretable classification by attention over learned prototypes.

The estimator :class:`IDWAttentionClassifier` implements inverse distance weighting attention
(McCarter, "Inverse distance weighting attention", arXiv:2310.18805) behind the scikit-learn API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: The types that a file written by ``skops.io.dump`` of a protoattn model holds beyond those skops
#: trusts by default: pass them to ``skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)`` or to
#: ``mlflow.sklearn.log_model(..., skops_trusted_types=SKOPS_TRUSTED_TYPES)``. A model whose
#: ``attention`` is your own function also needs that function's name; the test suite recomputes the
#: list with ``skops.io.get_untrusted_types`` so that it cannot go stale.
SKOPS_TRUSTED_TYPES = ("protoattn.classifier.IDWAttentionClassifier",)

# The public names below live in modules that import torch and scikit-learn, which take seconds to
# import: they are imported on first use (PEP 562), so that ``protoattn --help`` and
# ``protoattn.__version__`` answer at once.
_LAZY = {
    "ATTENTIONS": "attention",
    "Explanation": "classifier",
    "IDWAttentionClassifier": "classifier",
    "InconsistentVersionWarning": "_persistence",
    "PatchReport": "classifier",
    "attention_weights": "classifier",
    "explain": "classifier",
}

__all__ = [
    "ATTENTIONS",
    "SKOPS_TRUSTED_TYPES",
    "Explanation",
    "IDWAttentionClassifier",
    "InconsistentVersionWarning",
    "PatchReport",
    "__version__",
    "attention_weights",
    "explain",
]

if TYPE_CHECKING:  # what static analysers and IDEs see
    from ._persistence import InconsistentVersionWarning
    from .attention import ATTENTIONS
    from .classifier import Explanation, IDWAttentionClassifier, PatchReport, attention_weights, explain


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted({*globals(), *_LAZY})
