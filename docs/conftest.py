"""pytest runs the ``>>>`` examples of the pages here (``*.md``) as doctests; it skips Sphinx's files."""

collect_ignore = ["conf.py"]
collect_ignore_glob = ["_build/*", "notebooks/*"]
