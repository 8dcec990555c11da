"""Errors a user can act on.

Every mistake a user can make (a missing file, a bad config key, an unsafe pickle)
raises a :class:`UserError` subclass whose message says what is wrong and how to
fix it. The command line prints that one line and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; its message names the problem and the fix."""


class DatasetError(UserError):
    """A dataset folder or file is missing, truncated or not in the expected format."""


class ConfigError(UserError):
    """A config file, key or value is invalid."""


class CheckpointError(UserError):
    """A checkpoint or exported backbone is missing, corrupt or of an unknown kind."""


class UnsafePickleError(UserError):
    """A pickle asks for a global outside the allow-list; it is refused, never executed."""
