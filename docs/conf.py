"""Sphinx configuration for the nebula_sync documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -q -b html docs docs/_build/html

Pages are Markdown (MyST); the API reference is generated from the docstrings with autodoc. No
network access is needed: intersphinx is not used.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nebula_sync import __version__  # noqa: E402

project = "nebula_sync"
author = "nebula_sync developers"
copyright = "nebula_sync developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]

# MyST: anchors for headings up to level 3, so pages can link to sections (``page.md#anchor``).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: docstrings are reST with ``:param:`` fields; show members in source order, keep the
# signatures' type hints in the signature.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"nebula_sync {release}"
html_theme_options = {
    "description": "A synchronous, thread-safe Python client for NebulaGraph 3.x",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
pygments_style = "sphinx"


def _default_text(value: Any) -> str:
    if isinstance(value, attrs.Factory) and not value.takes_self:  # type: ignore[arg-type]
        value = value.factory()
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _attrs_signature(app: Any, what: str, name: str, obj: Any, options: Any, signature: Any,
                     return_annotation: Any) -> Any:  # fmt: skip
    """Class signatures of attrs classes from their fields: declared types and real defaults.

    attrs generates ``__init__`` source whose defaults read ``attr_dict['x'].default`` and whose
    annotations come from converters; neither says anything to a reader.
    """
    if what != "class" or not attrs.has(obj):
        return None
    params: list[str] = []
    star = False
    for field in attrs.fields(obj):
        if not field.init:
            continue
        if field.kw_only and not star:
            params.append("*")
            star = True
        text = field.alias or field.name
        if field.type is not None:
            kind = field.type
            text += f": {kind if isinstance(kind, str) else getattr(kind, '__name__', kind)}"
        if field.default is not attrs.NOTHING:
            text += f" = {_default_text(field.default)}"
        params.append(text)
    return f"({', '.join(params)})", return_annotation


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _attrs_signature)
