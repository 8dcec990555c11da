"""Errors a user can act on.

Every mistake a user can make (a missing file, a bad config key, an unsafe pickle)
raises a :class:`UserError` subclass whose message says what is wrong and how to
fix it. The command line prints that one line and exits with status 2; anything
else is a bug and keeps its traceback. An ``OSError`` (a full disk, a read-only folder)
is the user's to fix too; :func:`describe_os_error` gives it the same one-line form.
"""

import errno


class UserError(Exception):
    """A mistake the user can fix; its message names the problem and the fix."""


class DatasetError(UserError):
    """A dataset folder or file is missing, truncated or not in the expected format."""


class ConfigError(UserError):
    """A config file, key or value is invalid."""


class UsageError(UserError):
    """The command line itself is wrong: an unknown command or option, a missing or malformed argument."""


class CheckpointError(UserError):
    """A checkpoint or exported backbone is missing, corrupt or of an unknown kind."""


class UnsafePickleError(UserError):
    """A pickle asks for a global outside the allow-list; it is refused, never executed."""


# What to do about a file-system error, by errno; the message names the path and the reason.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "free space on that disk, or choose an output_dir or output path on another",
    errno.EDQUOT: "free space within your quota, or choose an output_dir or output path elsewhere",
    errno.EROFS: "choose a writable output_dir or output path",
    errno.EACCES: "choose a location you may use, or change its permissions",
    errno.EPERM: "choose a location you may use, or change its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a folder; choose another path",
    errno.EEXIST: "a folder is needed there; move what is there, or choose another path",
    errno.EISDIR: "pass a file path, not a folder",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many files are open; raise the limit (ulimit -n)",
}


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: the path, the system's reason, and a fix suited to the errno.

    E.g. ``runs/x/config.yaml: Read-only file system; choose a writable output_dir or output path``.
    """
    paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    reason = error.strerror or str(error) or type(error).__name__
    fix = _OS_ERROR_FIXES.get(error.errno, "check the path and the disk")
    return f"{paths}: {reason}; {fix}" if paths else f"{reason}; {fix}"
