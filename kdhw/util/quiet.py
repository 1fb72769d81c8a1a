"""Third-party log noise, silenced at its source and only while kdhw works.

qonnx executes a graph node by node, building one onnxruntime session per node with the graph's old opset;
onnxruntime then logs two C++ warnings per node straight to stderr (about 190 lines for a Conv1D run)
that say nothing about the user's model.  The CLI silences onnxruntime for its whole process; the Python
API does it only for the duration of a kdhw call (``quiet``), so importing kdhw changes nothing global.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# onnxruntime severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal
_ORT_ERROR, _ORT_DEFAULT = 3, 2


def silence_onnxruntime(severity: int = _ORT_ERROR) -> None:
    """Only onnxruntime errors reach stderr from now on (warnings dropped)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency; nothing to silence without it
        return
    ort.set_default_logger_severity(severity)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """onnxruntime's warnings off inside the block; its default severity (warning) back on exit.

    onnxruntime offers no getter for the current severity, so a value a caller set before is not
    restored: the default is.
    """
    silence_onnxruntime(_ORT_ERROR)
    try:
        yield
    finally:
        silence_onnxruntime(_ORT_DEFAULT)
