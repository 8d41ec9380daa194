"""Export a fitted classifier's network to ONNX, for serving without Python or torch.

Requires the ``onnx`` extra (``onnx`` and ``onnxscript``; ``onnxruntime`` to run the file).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import __version__


class _LogitsAndProbabilities(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, X):
        logits = self.network(X)
        return logits, torch.softmax(logits, dim=1)


@contextlib.contextmanager
def _quiet_exporter():
    # The exporter logs a warning per optional operator library it cannot find (torchvision) and
    # raises torch's own deprecation warnings: none of them concern the user.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(clf, path, *, dtype="float32"):
    """Write the fitted network of ``clf`` to ``path`` as an ONNX model.

    The model takes ``X`` of shape (n_samples, n_features) in ``dtype`` and returns ``logits`` and
    ``probabilities`` of shape (n_samples, n_classes), the same as ``decision_function`` (before the
    binary reduction) and ``predict_proba`` on input of that dtype. The labels, feature names and
    protoattn version are stored as JSON in the model's metadata (``classes``, ``feature_names``,
    ``protoattn_version``): ``classes[argmax(probabilities)]`` is the prediction.

    Parameters
    ----------
    clf : IDWAttentionClassifier
        A fitted classifier (any attention, including learned kernels and user callables that
        torch's exporter can trace).
    path : str or path-like
        Where to write the ``.onnx`` file.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the exported graph.

    Returns
    -------
    path : str or path-like
        ``path``, for chaining.
    """
    check_is_fitted(clf)
    if dtype not in ("float32", "float64"):
        raise ValueError(f'dtype must be "float32" or "float64", got {dtype!r}.')
    try:
        import onnx
    except ImportError as error:
        raise ImportError("export_onnx needs the onnx extra: pip install 'protoattn[onnx]'.") from error
    torch_dtype = getattr(torch, dtype)
    module = _LogitsAndProbabilities(clf._network(torch_dtype)).eval()
    example = torch.as_tensor(clf.prototypes_[:2], dtype=torch_dtype)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            input_names=["X"],
            output_names=["logits", "probabilities"],
            dynamic_shapes={"X": {0: torch.export.Dim("n_samples")}},
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    metadata = {
        "classes": json.dumps(np.asarray(clf.classes_).tolist()),
        "feature_names": json.dumps(getattr(clf, "feature_names_in_", np.array([])).tolist()),
        "protoattn_version": __version__,
    }
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path
