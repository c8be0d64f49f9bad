"""The one exception type for user mistakes: binaries print it as one line, not a traceback."""


class ConfigError(ValueError):
    """A bad name, shape, path or setting that the user can fix; the message says how."""
