"""Error types that the CLI maps to exit codes.

Every stage raises ``InputError`` for anything the *user* can fix (bad file, bad key, unsupported op):
the CLI prints its message as one line on stderr and exits 2, never a traceback.  ``CheckFailed`` is a
verification or fit failure (exit 1).  Anything else is a bug in kdhw and keeps its traceback.
"""


class KdhwError(Exception):
    """Base class of the errors kdhw reports without a traceback."""

    exit_code = 2


class InputError(KdhwError):
    """Bad input, config or environment: one line naming the file/key/layer and what is allowed."""

    exit_code = 2


class ToolMissing(InputError):
    """An external tool (g++, yosys, iverilog, ...) is not installed; the message says what to install."""


class CheckFailed(KdhwError):
    """Verification mismatch or a design that does not fit: exit 1."""

    exit_code = 1
