"""Export a fitted classifier (or a pipeline that ends in one) to ONNX, for serving without Python or torch.

Requires the ``onnx`` extra (``onnx`` and ``onnxscript``, and ``skl2onnx`` for pipelines; ``onnxruntime``
to run the file).
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
from .classifier import IDWAttentionClassifier


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


def network_to_onnx(clf, dtype="float32", *, opset=None):
    """The fitted network of ``clf`` as an in-memory ONNX model, exported by torch from the network
    itself (the one definition of the model): input ``X`` (n_samples, n_features) in ``dtype``, outputs
    ``logits`` and ``probabilities`` (n_samples, n_classes). :func:`export_onnx` writes it with metadata;
    the skl2onnx converter of :mod:`protoattn.onnx` embeds it in a pipeline's graph.

    Parameters
    ----------
    clf : IDWAttentionClassifier
        A fitted classifier.
    dtype : {"float32", "float64"}, default="float32"
    opset : int, optional
        The ONNX operator set of the graph; default: the exporter's.

    Returns
    -------
    onnx.ModelProto
    """
    check_is_fitted(clf)
    if dtype not in ("float32", "float64"):
        raise ValueError(f'dtype must be "float32" or "float64", got {dtype!r}.')
    if getattr(clf, "is_categorical_", np.zeros(1, dtype=bool)).any():
        names = np.asarray(clf._feature_names())[clf.is_categorical_].tolist()
        raise ValueError(
            f"ONNX export takes numeric features, and this model has categorical ones ({', '.join(map(str, names))}): "
            "encode them as numbers before the classifier (e.g. an OrdinalEncoder in a pipeline, then "
            "categorical_features=None), or serve the model with protoattn."
        )
    try:
        import onnx  # noqa: F401  (the exporter needs it, and onnxscript)
    except ImportError as error:
        raise ImportError("ONNX export needs the onnx extra: pip install 'protoattn[onnx]'.") from error
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
            **({} if opset is None else {"opset_version": int(opset)}),
        )
    return program.model_proto


def export_onnx(clf, path, *, dtype="float32"):
    """Write a fitted classifier, or a fitted pipeline that ends in one, to ``path`` as an ONNX model.

    For a classifier, the model takes ``X`` of shape (n_samples, n_features) in ``dtype`` and returns
    ``logits`` and ``probabilities`` of shape (n_samples, n_classes), the same as
    ``decision_function`` (before the binary reduction) and ``predict_proba`` on input of that dtype.

    For a :class:`~sklearn.pipeline.Pipeline` whose last step is the classifier (a scaler in front,
    say), every step is converted by skl2onnx (which must be installed; see :mod:`protoattn.onnx`): the
    model takes ``X``, the pipeline's input as one numeric table, and returns ``label`` and
    ``probabilities``, the same as the pipeline's ``predict`` and ``predict_proba``. For a pipeline
    whose input columns have different types, call ``skl2onnx.to_onnx(pipeline, X[:1])`` after
    ``import protoattn.onnx``.

    Either way the labels, feature names and protoattn version are stored as JSON in the model's
    metadata (``classes``, ``feature_names``, ``protoattn_version``): ``classes[argmax(probabilities)]``
    is the prediction.

    Parameters
    ----------
    clf : IDWAttentionClassifier or Pipeline ending in one
        Fitted. The classifier may use any attention, including learned kernels and user callables
        that torch's exporter can trace.
    path : str or path-like
        Where to write the ``.onnx`` file.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the exported graph.

    Returns
    -------
    path : str or path-like
        ``path``, for chaining.
    """
    steps = getattr(clf, "steps", None)
    if steps and isinstance(steps[-1][1], IDWAttentionClassifier):
        check_is_fitted(clf)
        if dtype not in ("float32", "float64"):
            raise ValueError(f'dtype must be "float32" or "float64", got {dtype!r}.')
        try:
            from .onnx import pipeline_to_onnx
        except ImportError as error:
            raise ImportError(
                "export_onnx converts a Pipeline with skl2onnx, which is not installed: pip install "
                "'protoattn[onnx]'. Or export the classifier alone: export_onnx(pipeline[-1], path)."
            ) from error
        model, classifier = pipeline_to_onnx(clf, dtype), steps[-1][1]
    elif isinstance(clf, IDWAttentionClassifier):
        model, classifier = network_to_onnx(clf, dtype), clf
    else:
        raise TypeError(
            f"export_onnx writes an IDWAttentionClassifier or a Pipeline that ends in one, got {type(clf).__name__}."
        )
    import onnx

    metadata = {
        "classes": json.dumps(np.asarray(classifier.classes_).tolist()),
        "feature_names": json.dumps(getattr(clf, "feature_names_in_", np.array([])).tolist()),
        "protoattn_version": __version__,
    }
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path
