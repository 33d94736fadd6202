"""User-facing errors: the CLI prints their message as one line, never a traceback."""


class GanforgeError(Exception):
    """A problem the user can fix: bad config, missing file, corrupt data."""


class ConfigError(GanforgeError):
    """An unknown key, an ill-typed value or an impossible combination in the config."""


class DataError(GanforgeError):
    """A dataset that is missing, corrupt or in an unexpected format."""


class CheckpointError(GanforgeError):
    """A checkpoint that is missing, corrupt or belongs to another model."""


class UsageError(GanforgeError):
    """A command-line value the model or the file system cannot honour: a class out of range, an
    impossible count, an output path that cannot be written or already holds the user's files."""
