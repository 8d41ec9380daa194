"""scikit-learn's own estimator checks: every one must pass, none is marked as expected to fail."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from protoattn import IDWAttentionClassifier


@parametrize_with_checks(
    [
        IDWAttentionClassifier(),
        IDWAttentionClassifier(attention="dot"),
        IDWAttentionClassifier(attention="cosine", n_prototypes=6, early_stopping=True),
        IDWAttentionClassifier(attention="kernel"),
        IDWAttentionClassifier(attention="relu"),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
