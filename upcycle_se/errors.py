"""Errors a user can act on: printed as one line by the CLI and recipe, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input (a file, a folder, an option) described in one line."""


class AudioError(UserError):
    """An audio file that cannot be used: missing, empty, corrupt, non-finite, or of the wrong shape."""


class DataError(UserError):
    """A data folder or manifest that does not have what the recipe needs."""


class ConfigError(UserError):
    """A bad hyperparameter value or override."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when the message is empty).

    Library errors (soundfile, YAML, torch.load) can span many lines; a user error quoting one keeps its
    own message to a single line.
    """
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
