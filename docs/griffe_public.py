"""A griffe extension for the API reference (mkdocs.yml): the reference shows only public
names and renders every doctest as code, leaving the source as written.

- A class whose base is private (``class RNN(_Recurrent)``) shows the private base's own
  bases instead (``Bases: Layer``), found recursively.
- A public attribute whose value mentions a private name (``_FRACTION``) shows no value.
- A ``>>>`` example outside an ``Examples:`` section (at the docstring's left margin),
  which Markdown would read as a nested quote, becomes a fenced ``pycon`` block.
"""

import re

import griffe

_PRIVATE = re.compile(r"(?<![\w.])_[A-Za-z]")
# a run of lines at the left margin that starts with ">>>", up to a blank line
_DOCTEST = re.compile(r"(?m)^>>>.*(?:\n(?!\s*$).*)*")


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


class PublicReference(griffe.Extension):
    def on_package(self, *, pkg, **kwargs):
        for obj in _objects(pkg):
            if obj.is_class and any(_private(base) for base in obj.bases):
                obj.bases = _public_bases(obj)
            elif obj.is_attribute and _names_private(obj):
                obj.value = None
            if obj.docstring is not None:
                obj.docstring.value = _DOCTEST.sub(_fence, obj.docstring.value)
        if pkg.docstring is not None:
            pkg.docstring.value = _DOCTEST.sub(_fence, pkg.docstring.value)
