"""The base of every error a user can cause (a setting, a path, a file, a picture): the
library raises its own subclass carrying the values, and a command line turns any of
them into one line and exit 2 (``lenet_jax.cli``)."""


class UserError(Exception):
    """Something the user gave cannot be used; the message says what and why."""
