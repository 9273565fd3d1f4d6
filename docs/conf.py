"""Sphinx configuration of jaxdrop's documentation (Sphinx + MyST, as flax and optax).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (warnings are errors).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the repository's jaxdrop, also without an install

import jaxdrop  # noqa: E402

project = "jaxdrop"
author = "the jaxdrop authors"
copyright = "2026, the jaxdrop authors"
release = version = jaxdrop.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args/Returns/Raises
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = f"jaxdrop {version}"
html_theme_options = {
    "repository_url": "https://github.com/jaxdrop/jaxdrop",
    "use_repository_button": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
