"""A griffe extension for the API reference (mkdocs.yml): fundl's docstrings use a few
reStructuredText habits that Markdown shows literally; this rewrites them as the site
renders them, leaving the source (and its doctests) as written.

- ``:func:`name```, ``:class:`~a.b```, ``:meth:``, ``:mod:``, ... become code spans.
- A paragraph ending in ``::`` (reST's "literal block follows") ends in ``:``; the
  indented block after it is already a Markdown code block.
"""

import re

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")
_LITERAL = re.compile(r"::[ \t]*$", re.MULTILINE)


class RstRoles(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            text = _ROLE.sub(r"`\1`", obj.docstring.value)
            obj.docstring.value = _LITERAL.sub(":", text)
