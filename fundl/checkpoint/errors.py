"""``CheckpointError``, and the one place an error gets the name of the function the user called.

Helpers inside the package raise errors that say where and what (``<file>: tensor 'w'
fails its checksum ...``); each public function wraps its body in :func:`named`, which
puts its own name in front (``restore: <file>: ...``). So the prefix is written once,
at the public function, and never threaded through the helpers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["CheckpointError", "named"]


class CheckpointError(ValueError):
    """A file that is not a readable fundl checkpoint: foreign, malformed, truncated or corrupt.

    A subclass of ``ValueError``; the message names the function, the file and what is
    wrong with it.

    Examples:
      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = os.path.join(d, "notes.safetensors")
      ...     with open(path, "w") as f:
      ...         _ = f.write("not a checkpoint")
      ...     try:
      ...         fundl.checkpoint.restore(path)
      ...     except fundl.checkpoint.CheckpointError as error:
      ...         print(error)  # doctest: +ELLIPSIS
      restore: ...notes.safetensors: header length ... is over safetensors' limit ...
    """


@contextlib.contextmanager
def named(name: str) -> Iterator[None]:
    """Prefix ``"{name}: "`` to the message of a ``ValueError``, ``TypeError`` or ``OSError``.

    The exception keeps its type, errno and traceback. A message that already starts with
    a function's name (an argument check from ``fundl._validate``) is left as it is.
    """
    try:
        yield
    except OSError as error:
        if error.strerror is not None:  # OSError(errno, message): str() shows strerror
            if not error.strerror.startswith(f"{name}: "):
                error.strerror = f"{name}: {error.strerror}"
        else:
            _prefix(error, name)
        raise
    except (ValueError, TypeError) as error:
        _prefix(error, name)
        raise


def _prefix(error: BaseException, name: str) -> None:
    if len(error.args) == 1 and isinstance(error.args[0], str):
        message = error.args[0]
        if not message.startswith(f"{name}: "):
            error.args = (f"{name}: {message}",)
