"""rawfin's own exception types and the exit codes the command line maps them to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1   # `rawfin check` / `rawfin replay`: a verdict, not an error
EXIT_USAGE = 2          # bad command line (argparse's own code)
EXIT_DATAERR = 65       # sysexits EX_DATAERR: unreadable or damaged input
EXIT_NOINPUT = 66       # sysexits EX_NOINPUT: input file missing or not readable
EXIT_CANTCREAT = 73     # sysexits EX_CANTCREAT: an output file cannot be created
EXIT_NOPERM = 77        # sysexits EX_NOPERM: needs root / CAP_NET_RAW / CAP_NET_ADMIN
EXIT_INTERRUPTED = 130  # Ctrl-C


class RawfinError(Exception):
    """Base of every error rawfin raises on purpose."""

    exit_code = EXIT_DATAERR


class StateError(RawfinError):
    """An application call that the endpoint's current state does not allow."""

    exit_code = EXIT_USAGE

    def __init__(self, call: str, state: object, why: str = "") -> None:
        self.call = call
        self.state = state
        name = getattr(state, "name", state)
        msg = f"{call}() is not allowed in state {name}"
        super().__init__(msg + (f": {why}" if why else ""))


class CaptureError(RawfinError):
    """A capture file that cannot be read (any further).

    ``frame`` is the 1-based number of the record where the damage starts
    (None when the file header itself is bad).
    """

    exit_code = EXIT_DATAERR

    def __init__(self, path: str, message: str, frame: int | None = None) -> None:
        self.path = str(path)
        self.frame = frame
        self.message = message
        where = f"{self.path}" + (f": frame {frame}" if frame is not None else "")
        super().__init__(f"{where}: {message}")


class DecodeError(RawfinError):
    """A packet whose bytes do not hold the headers they claim."""

    exit_code = EXIT_DATAERR


class PrivilegeError(RawfinError):
    exit_code = EXIT_NOPERM


class UsageError(RawfinError):
    """A command line that cannot be carried out as written (exit 2, like argparse's own)."""

    exit_code = EXIT_USAGE


class OutputError(RawfinError):
    """An output file that cannot be created or renamed into place (sysexits EX_CANTCREAT)."""

    exit_code = EXIT_CANTCREAT
