"""Errors a user can act on: printed as one line by the CLI and recipe, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input (a file, a folder, an option) described in one line."""


class AudioError(UserError):
    """An audio file that cannot be used: missing, empty, corrupt, non-finite, or of the wrong shape."""


class DataError(UserError):
    """A data folder or manifest that does not have what the recipe needs."""


class ConfigError(UserError):
    """A bad hyperparameter value or override."""
