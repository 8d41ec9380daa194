"""ONNX for pipelines: importing this module registers the classifier with skl2onnx.

With :class:`~protoattn.IDWAttentionClassifier` registered (skl2onnx must be installed:
``pip install 'protoattn[onnx]'``), one ``skl2onnx.to_onnx`` call converts a pipeline that holds the
classifier, a scaler in front of it say, into one ONNX graph (:func:`export_onnx` does it for you when
given a pipeline, and writes the file):

>>> import numpy as np
>>> import onnxruntime
>>> import skl2onnx
>>> from sklearn.datasets import load_iris
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.preprocessing import StandardScaler
>>> import protoattn.onnx
>>> from protoattn import IDWAttentionClassifier
>>> X, y = load_iris(return_X_y=True)
>>> pipeline = make_pipeline(StandardScaler(), IDWAttentionClassifier(n_prototypes=6, random_state=0)).fit(X, y)
>>> onx = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32), options={"zipmap": False})
>>> session = onnxruntime.InferenceSession(onx.SerializeToString())
>>> label, probabilities = session.run(None, {"X": X.astype(np.float32)})
>>> bool((label == pipeline.predict(X)).all())
True
>>> bool(np.allclose(probabilities, pipeline.predict_proba(X), atol=1e-5))
True

Like skl2onnx's own classifiers, the graph returns ``label`` and ``probabilities``; without
``options={"zipmap": False}`` the probabilities come as a list of dictionaries from label to
probability (skl2onnx's ZipMap). The classifier's part of the graph is the torch network's own export
(:func:`protoattn.export.network_to_onnx`), so it computes exactly what the estimator computes, for
every attention; labels must be integers or strings, as skl2onnx requires of every classifier. Input
in float64 (``X[:1]`` as float64) gives a graph in float64. The graph needs ONNX operator set 18 or
later (skl2onnx's ``target_opset``; the default is later).
"""

from __future__ import annotations

import numpy as np

try:
    import skl2onnx
    from onnx import AttributeProto, NodeProto, TensorProto, helper, numpy_helper, shape_inference
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from skl2onnx.common.utils_classifier import get_label_classes
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "protoattn.onnx registers the classifier with skl2onnx, which is not installed: "
        "pip install 'protoattn[onnx]' (or pip install skl2onnx)."
    ) from error

from .classifier import IDWAttentionClassifier
from .export import export_onnx, network_to_onnx

__all__ = ["export_onnx", "network_to_onnx", "pipeline_to_onnx"]

#: The name skl2onnx knows the classifier by (library name, then class name, as its guide asks).
ALIAS = "ProtoattnIDWAttentionClassifier"


#: The oldest ONNX operator set that torch's exporter writes.
MIN_OPSET = 18


def _labels(classes):
    """``classes`` as the tensor that ``label`` is drawn from, of the type skl2onnx's shape calculator
    declares: int64 for numbers (whole numbers: scikit-learn refuses other float labels), else strings."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "biuf":
        return numpy_helper.from_array(classes.astype(np.int64), name="classes")
    return helper.make_tensor("classes", TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes])


def _classifier_graph(clf, classes, dtype, opset):
    """The network's ONNX export with skl2onnx's classifier outputs, ``label`` (from ``classes``) and
    ``probabilities``."""
    model = network_to_onnx(clf, dtype, opset=opset)
    graph = model.graph
    graph.initializer.append(_labels(classes))
    graph.node.extend(
        [
            helper.make_node("ArgMax", ["probabilities"], ["class_index"], name="argmax", axis=1, keepdims=0),
            helper.make_node("Gather", ["classes", "class_index"], ["label"], name="label", axis=0),
        ]
    )
    probabilities = next(output for output in graph.output if output.name == "probabilities")
    label_type = graph.initializer[-1].data_type
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("label", label_type, ["n_samples"]), probabilities])
    return model


def _without_omitted_inputs(model):
    """``model`` with no omitted optional input (``""``) left in its nodes.

    skl2onnx orders the nodes of a graph by the names of their inputs and takes ``""`` for a tensor no
    node makes. Trailing omitted inputs are dropped, which ONNX defines to mean the same; an omitted
    minimum of ``Clip`` (torch writes ``Clip(x, "", max)`` for ``clamp(max=...)``) becomes the lowest
    finite value of the type, the default that ONNX Runtime's Clip takes for it.
    """
    graph = model.graph
    types = None
    for node in graph.node:
        while node.input and node.input[-1] == "":
            del node.input[-1]
        if "" not in node.input:
            continue
        if node.op_type != "Clip":
            raise NotImplementedError(
                f"The network's ONNX graph omits an optional input of {node.op_type}, which skl2onnx cannot "
                "hold; export the classifier alone with protoattn.export.export_onnx."
            )
        if types is None:
            inferred = shape_inference.infer_shapes(model).graph
            types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info]}
        dtype = helper.tensor_dtype_to_np_dtype(types[node.input[0]])
        lowest = numpy_helper.from_array(np.array(np.finfo(dtype).min, dtype=dtype), f"{node.name}_lowest")
        graph.initializer.append(lowest)
        node.input[1] = lowest.name
    return model


def _embed(scope, operator, container, model):
    """Add the graph of ``model`` to skl2onnx's ``container``, its inputs and outputs wired to the
    operator's, every name made unique in ``scope``.

    ``skl2onnx.helpers.add_onnx_graph`` means to do the same, but draws the initializers' new names
    from the operators' names, where they may clash with a tensor elsewhere in the pipeline's graph.
    """
    graph = model.graph
    names = {"": ""}  # an omitted optional input (none is left by _without_omitted_inputs) stays omitted

    def rename(name):
        if name not in names:
            names[name] = scope.get_unique_variable_name(name)
        return names[name]

    for node in graph.node:
        if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
            raise NotImplementedError(
                f"The network's ONNX graph holds control flow ({node.op_type}), which the skl2onnx converter "
                "cannot embed; export the classifier alone with protoattn.export.export_onnx."
            )
    for source, target in zip(operator.inputs, graph.input, strict=True):
        container.add_node("Identity", source.full_name, rename(target.name), name=scope.get_unique_operator_name("X"))
    for tensor in graph.initializer:
        copy = TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename(tensor.name)
        container.initializers.append(copy)
    for node in graph.node:
        copy = NodeProto()
        copy.CopyFrom(node)
        copy.name = scope.get_unique_operator_name(node.name or node.op_type)
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        container.nodes.append(copy)
    for source, target in zip(graph.output, operator.outputs, strict=True):
        container.add_node(
            "Identity", rename(source.name), target.full_name, name=scope.get_unique_operator_name(target.onnx_name)
        )
    for opset in model.opset_import:
        container.node_domain_version_pair_sets.add((opset.domain, opset.version))


def _convert(scope, operator, container):
    """skl2onnx's converter: the network's graph, computing ``label`` and ``probabilities``."""
    clf = operator.raw_operator
    if container.target_opset is not None and container.target_opset < MIN_OPSET:
        raise ValueError(
            f"IDWAttentionClassifier converts to ONNX operator set {MIN_OPSET} or later, the oldest that torch's "
            f"exporter writes; skl2onnx was asked for {container.target_opset}. Pass target_opset={MIN_OPSET} "
            f'(or {{"": {MIN_OPSET}, "ai.onnx.ml": 3}}) or later, or leave it out.'
        )
    dtype = "float64" if isinstance(operator.inputs[0].type, DoubleTensorType) else "float32"
    classes = get_label_classes(scope, clf)  # classes_, or their indices with the option nocl=True
    model = _classifier_graph(clf, classes, dtype, container.target_opset)
    _embed(scope, operator, container, _without_omitted_inputs(model))


skl2onnx.update_registered_converter(
    IDWAttentionClassifier,
    ALIAS,
    calculate_linear_classifier_output_shapes,
    _convert,
    options={"zipmap": [True, False, "columns"], "nocl": [False, True]},
)


def pipeline_to_onnx(pipeline, dtype="float32"):
    """A fitted pipeline as an ONNX model with input ``X`` (its input as one numeric table in ``dtype``)
    and outputs ``label`` and ``probabilities``, as tensors; :func:`export_onnx` writes it to a file.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline or IDWAttentionClassifier
        Fitted; any step skl2onnx converts, the classifier included.
    dtype : {"float32", "float64"}, default="float32"

    Returns
    -------
    onnx.ModelProto
    """
    tensor = {"float32": FloatTensorType, "float64": DoubleTensorType}[dtype]
    return skl2onnx.to_onnx(
        pipeline,
        initial_types=[("X", tensor([None, pipeline.n_features_in_]))],
        options={IDWAttentionClassifier: {"zipmap": False}},
    )
