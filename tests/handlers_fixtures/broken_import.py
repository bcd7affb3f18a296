"""Module-level code that fails, as a handler whose init cannot reach its database."""

raise RuntimeError("cannot reach the orders database")
