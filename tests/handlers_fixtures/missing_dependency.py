"""A handler module whose dependency is not installed."""

import a_package_that_is_not_installed  # noqa: F401


def handler(event, context):
    return None
