"""The estimator's HTML repr (Jupyter's display) links to its entry in the API documentation."""

import re

from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import protoattn
from protoattn import IDWAttentionClassifier


def doc_links(html):
    return re.findall(r'href="([^"]*)"', html)


def test_the_html_repr_links_to_the_api_page():
    links = doc_links(IDWAttentionClassifier()._repr_html_())
    assert "api.html#protoattn.IDWAttentionClassifier" in [link.rsplit("/", 1)[-1] for link in links]
    # The anchor is the public path, which autodoc gives the class's entry: it must name the class.
    anchor = next(link for link in links if "api.html#" in link).split("#")[1]
    assert getattr(protoattn, anchor.split(".")[-1]) is IDWAttentionClassifier and anchor.startswith("protoattn.")


def test_in_a_pipeline_too():
    links = doc_links(make_pipeline(StandardScaler(), IDWAttentionClassifier())._repr_html_())
    assert any(link.endswith("api.html#protoattn.IDWAttentionClassifier") for link in links)
    assert any("scikit-learn.org" in link and "StandardScaler" in link for link in links)  # theirs unchanged


def test_a_subclass_elsewhere_gets_no_link_to_our_page():
    class Mine(IDWAttentionClassifier):
        pass

    assert Mine()._get_doc_link() == ""
