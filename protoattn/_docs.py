"""Links into the documentation, the Sphinx site built from ``docs/``: named in this one place.

``DOCS_ROOT`` is empty while the site has no public address: links are then relative, and resolve
within the built site itself (its examples render the estimators' HTML reprs). Set it to the site's
address, ending in ``/``, once it is published, and every link follows.
"""

DOCS_ROOT = ""

#: The API reference page; autodoc gives each object the anchor of its public path.
API_PAGE = DOCS_ROOT + "api.html"

#: The link behind the "?" icon of an estimator's HTML repr (scikit-learn's ``_doc_link_template``,
#: formatted with ``estimator_name``).
ESTIMATOR_DOC_LINK = API_PAGE + "#protoattn.{estimator_name}"
