"""protoattn: interpretable classification by attention over learned prototypes.

The estimator :class:`IDWAttentionClassifier` implements inverse distance weighting attention
(McCarter, "Inverse distance weighting attention", arXiv:2310.18805) behind the scikit-learn API.
"""

from ._persistence import InconsistentVersionWarning
from .attention import ATTENTIONS
from .classifier import Explanation, IDWAttentionClassifier

__version__ = "0.1.0"

__all__ = ["ATTENTIONS", "Explanation", "IDWAttentionClassifier", "InconsistentVersionWarning", "__version__"]
