"""A griffe extension for the API reference (mkdocs.yml): the reference shows only public
names and renders every doctest as code, leaving the source as written.

- A class whose base is private (``class RNN(_Recurrent)``) shows the private base's own
  bases instead (``Bases: Layer``), found recursively.
- A public attribute whose value mentions a private name (``_FRACTION``) shows no value.
- A ``>>>`` example outside an ``Examples:`` section (at the docstring's left margin),
  which Markdown would read as a nested quote, becomes a fenced ``pycon`` block.
- A ``Returns:`` or ``Yields:`` description whose first line holds a colon
  (``{name: array}``, ``(x, y): ...``) stays one description: the Google parser would
  take the text before the colon for a type. The type shown is the signature's.
"""

import re

import griffe

_PRIVATE = re.compile(r"(?<![\w.])_[A-Za-z]")
# a run of lines at the left margin that starts with ">>>", up to a blank line
_DOCTEST = re.compile(r"(?m)^>>>.*(?:\n(?!\s*$).*)*")
# a Returns/Yields header, blank lines, then the first line of its description
_RETURNS = re.compile(r"(?m)^([ \t]*(?:Returns|Yields):[ \t]*\n(?:[ \t]*\n)*)([ \t]+)(?=[^\n]*:)")


def _private(base: object) -> bool:
    return str(base).rsplit(".", 1)[-1].startswith("_")


def _public_bases(cls: griffe.Class) -> list:
    bases = []
    for base, resolved in zip(cls.bases, _resolve(cls), strict=True):
        if _private(base) and resolved is not None:
            bases.extend(_public_bases(resolved))
        elif not _private(base):
            bases.append(base)
    return bases


def _resolve(cls: griffe.Class) -> list:
    resolved = []
    for base in cls.bases:
        try:
            target = cls.modules_collection.get_member(base.canonical_path)
            resolved.append(target.final_target if target.is_alias else target)
        except (AttributeError, KeyError, griffe.AliasResolutionError):
            resolved.append(None)
    return resolved


def _objects(obj: griffe.Object):
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield member
        if member.is_module or member.is_class:
            yield from _objects(member)


def _names_private(attribute: griffe.Attribute) -> bool:
    """A public attribute whose value mentions a private name."""
    value = attribute.value
    return (
        not attribute.name.startswith("_")
        and value is not None
        and bool(_PRIVATE.search(str(value)))
    )


def _fence(match: re.Match) -> str:
    return f"```pycon\n{match.group(0)}\n```"


def _markdown(text: str) -> str:
    """The docstring with bare doctests fenced and Returns descriptions kept whole."""
    text = _DOCTEST.sub(_fence, text)
    # ": description" gives an empty type, so the parser keeps the whole line as text
    return _RETURNS.sub(lambda m: f"{m.group(1)}{m.group(2)}: ", text)


class PublicReference(griffe.Extension):
    def on_package(self, *, pkg, **kwargs):
        for obj in _objects(pkg):
            if obj.is_class and any(_private(base) for base in obj.bases):
                obj.bases = _public_bases(obj)
            elif obj.is_attribute and _names_private(obj):
                obj.value = None
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value)
        if pkg.docstring is not None:
            pkg.docstring.value = _markdown(pkg.docstring.value)
