"""Sphinx configuration for the trio_realtime documentation.

Why Sphinx: the reference is generated from the docstrings with autodoc, and napoleon reads the
Google-style sections (Args, Returns, Raises, Attributes) the code is written with, as in trio's
documentation. MyST lets the guide pages be Markdown, like the README, so the same fenced code
blocks that the test suite extracts and runs (tests/test_docs_examples.py) render here too.

Build with ``nox -s docs`` (warnings are errors, and every cross-reference must resolve).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

project = "trio_realtime"
author = "trio_realtime developers"
copyright = "trio_realtime developers"
release = importlib.metadata.version("trio-realtime")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings are Google style; napoleon turns their sections into fields.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": True}
add_module_names = False
python_use_unqualified_type_names = True

# Every reference must resolve (-n), except to projects whose inventories are not fetched:
# the build reads nothing from the network.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(trio|ssl|collections(\.abc)?|typing|enum|datetime|random|abc)\..*"),
    (r"py:.*", r"(os|pathlib|subprocess|httpx)\..*"),
    # Private helpers that appear in signatures of objects users never construct themselves.
    (r"py:.*", r"trio_realtime(\.\w+)?\._.*"),
    (r"py:.*", r"(Endpoint|ChannelHost|Hub|ServerConfig|Gate|Meta|Database|PostgresReadiness)"),
    (r"py:.*", r"(Exception|BaseException|ValueError|TypeError|KeyError|LookupError)"),
    (r"py:class", r"(T|T_co|D|P|TypedDictT)"),
    # Sphinx splits some long expanded JSONValue unions in dataclass signatures at a comma.
    (r"py:class", r"dict\[str"),
    # ... and a variadic tuple of a private class at its comma.
    (r"py:class", r"tuple\[~?trio_realtime\._\w+\._\w+"),
]

html_theme = "furo"
html_title = f"trio_realtime {release}"


def _skip_reexports(  # noqa: PLR0917 - the signature Sphinx calls
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """In a module's member list (trio_realtime.protocol), leave out what trio_realtime itself
    exports: those are documented once, under trio_realtime."""
    if what == "module" and getattr(obj, "__module__", None) == "trio_realtime":
        return True
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-skip-member", _skip_reexports)
