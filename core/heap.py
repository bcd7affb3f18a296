"""The garbage collector's policy for a long-running service, applied once start-up is done.

CPython collects its youngest generation every 700 net container allocations, and every tenth of
those collections also walks the middle one. A batch allocates hundreds of short-lived dicts and
lists (its event, its copy, spans and their attributes), so the default policy runs a collection
every few invocations, and each one walks what start-up left behind (configuration, clients,
modules, the handler's own module state) again and again: about a fifth of dispatching a small
batch with tracing on. Start-up's survivors are frozen (`gc.freeze`, never walked again) and the
youngest generation is collected every 10,000 allocations instead, which still bounds what cyclic
garbage can wait for a collection to a few milliseconds of work.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what exists now and collect the youngest generation less often (process-wide)."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)
