"""How the command-line entry points end: one line for a user's mistake, a traceback for a bug.

A mistake the user can fix (a config value out of range, a missing or malformed file, a
checkpoint of another architecture, a read-only or full disk) raises :class:`UserError` (the
errors of the data, converter and checkpoint modules derive from it) or an ``OSError`` that
names its file. :func:`report` prints it as ``error: <what>, <where>, <what was expected>`` on
stderr and the entry point exits with :data:`EXIT_USER_ERROR`; ``--debug`` adds the traceback.
Any other exception is a bug and keeps its traceback.

Every entry point takes absl flags (``--name=value``); :func:`run_command` is the command-line
frame of those besides ``main`` (flags of their own, ``--help``, ``--debug``, the error lines).

Exit codes of every entry point: 0 done, :data:`EXIT_USER_ERROR` (2) a user's mistake (fix it,
do not retry), :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``) training stopped by SIGTERM after
saving a checkpoint: preempted, resumable (run the same command again; the launchers in
``launch/`` requeue on it), 1 an internal error (traceback).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

from absl import flags

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75

# OSErrors that are about the user's files or disks, not about this program.
_ENVIRONMENT_ERRNOS = {
    errno.ENOENT: "expected an existing path",
    errno.ENOTDIR: "expected a directory",
    errno.EISDIR: "expected a file, not a directory",
    errno.EACCES: "expected a path this user may read and write",
    errno.EPERM: "expected a path this user may read and write",
    errno.EROFS: "expected a writable file system",
    errno.ENOSPC: "expected free space on the device",
    errno.EDQUOT: "expected free space within the disk quota",
}


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong, where, and what was expected."""


class InputError(UserError, ValueError):
    """A file or value the user gave has content this program cannot use."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the config or command line names does not exist."""


class Preempted(BaseException):
    """The run stopped on SIGTERM (exit :data:`EXIT_PREEMPTED`); in the training loop after saving
    a checkpoint. A ``BaseException``, like ``KeyboardInterrupt``: raised from the signal handler
    into any code, it must not be taken for that code's own failure (e.g. an unreadable
    checkpoint) by an ``except Exception``."""


def is_user_error(exc: BaseException) -> bool:
    """User mistakes (:class:`UserError`) and ``OSError`` s naming a path that is missing,
    read-only or on a full disk."""
    if isinstance(exc, UserError):
        return True
    return isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS and bool(exc.filename)


_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(exc: BaseException) -> Optional[OSError]:
    """The first full-disk / read-only / permission ``OSError`` in ``exc``'s cause and context
    chain: background writers (checkpoints, logs) wrap the disk's error in their own."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def message(exc: BaseException, where: str = "") -> str:
    """The one-line message for a user error; ``where`` names the path an ``OSError`` without a
    file name was about (e.g. the workdir)."""
    if isinstance(exc, OSError) and not isinstance(exc, UserError) and exc.errno in _ENVIRONMENT_ERRNOS:
        path = exc.filename or where or "(path not reported)"
        return f"{exc.strerror or os.strerror(exc.errno)}, {path}, {_ENVIRONMENT_ERRNOS[exc.errno]}"
    return " ".join(str(exc).split()) or type(exc).__name__


def report(exc: BaseException, debug: bool = False, where: str = "", file=None) -> int:
    """Prints ``error: ...`` (with ``debug`` the traceback first) and returns the exit code:
    :data:`EXIT_USER_ERROR` for a user error, :data:`EXIT_PREEMPTED` for :class:`Preempted`."""
    file = file or sys.stderr
    if isinstance(exc, Preempted):
        print(f"preempted: {exc} (exit {EXIT_PREEMPTED}: resumable, run the same command again)", file=file, flush=True)
        return EXIT_PREEMPTED
    if debug:
        traceback.print_exception(exc, file=file)
    disk = None if is_user_error(exc) else disk_error(exc)
    print(f"error: {message(disk if disk is not None else exc, where)}", file=file, flush=True)
    return EXIT_USER_ERROR


def handles(exc: BaseException) -> bool:
    """Whether :func:`report` should end the program on ``exc`` (else: re-raise, a bug)."""
    return isinstance(exc, Preempted) or is_user_error(exc) or disk_error(exc) is not None


_DISK_WORDS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "os_error_code='28'",
    "os_error_code='122'",
    "os_error_code='30'",
)


class DiskErrorTracebackFilter(logging.Filter):
    """Keeps the message but drops the traceback of error records about a full or read-only disk:
    background writers (orbax's save threads) log one per thread, before the entry point's own
    one-line error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.exc_info and record.exc_info[1] is not None:
            if any(words in str(record.exc_info[1]) for words in _DISK_WORDS):
                record.exc_info, record.exc_text = None, None
        return True


def quiet_disk_error_tracebacks(logger_name: str = "absl") -> None:
    """Installs :class:`DiskErrorTracebackFilter` on ``logger_name`` (once; entry points only)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, DiskErrorTracebackFilter) for f in logger.filters):
        logger.addFilter(DiskErrorTracebackFilter())


def run_command(
    prog: str,
    doc: str,
    define_flags: Callable[[flags.FlagValues, List[str]], None],
    body: Callable[[flags.FlagValues], int],
    argv: Optional[Sequence[str]] = None,
    *,
    required: Sequence[str] = (),
    check_argv: Optional[Callable[[List[str]], None]] = None,
    where_flag: str = "",
) -> int:
    """Runs the command ``prog`` on ``argv`` (default ``sys.argv[1:]``); returns its exit status.

    ``define_flags(flag_values, argv)`` defines the command's absl flags in a ``FlagValues`` of its
    own (several commands can then run in one process, e.g. in tests); ``--debug`` and ``--help``
    (prints ``doc`` and the flags) are added. ``check_argv`` may reject ``argv`` with a
    :class:`UserError` before the flags are parsed. A flag error, a missing ``required`` flag or a
    user error raised by ``body(flag_values)`` is one ``error:`` line and exit status 2 (the file
    an ``OSError`` does not name is the value of ``where_flag``); a bug keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    fv = flags.FlagValues()
    try:
        define_flags(fv, argv)
        flags.DEFINE_bool(
            "debug", False, "Print the traceback of user errors too (bugs always show it).", flag_values=fv
        )
        flags.DEFINE_bool("help", False, "Show this help.", short_name="h", flag_values=fv)
        if "--help" in argv or "-h" in argv:
            print(f"{doc.strip()}\n\nflags of {prog}:\n{fv.get_help(include_special_flags=False)}")
            return 0
        if check_argv is not None:
            check_argv(argv)
        for name in required:
            flags.mark_flag_as_required(name, flag_values=fv)
        rest = fv([prog] + argv)
        if len(rest) > 1:
            raise InputError(f"unexpected arguments {rest[1:]}, expected only --flags (see {prog} --help)")
    except (flags.Error, UserError) as e:
        print(f"error: {message(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    try:
        return body(fv)
    except (Exception, Preempted) as e:  # pylint: disable=broad-except
        if not handles(e):
            raise  # a bug: keep the traceback
        return report(e, debug=fv.debug, where=fv[where_flag].value if where_flag else "")
