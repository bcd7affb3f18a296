"""The one base of every error Sluiceway names for a user.

Each subclass carries the message a user sees; the command line prints it as one line and exits,
never with a traceback. Anything that is not a `SluicewayError` is a defect, not a condition.
"""

from __future__ import annotations


class SluicewayError(Exception):
    """A condition Sluiceway can name; `str(error)` is the message for the user."""
