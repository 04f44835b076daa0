"""A pytest plugin for ``nox -s mutation``: every function under the module it is defined in.

The package presents its public classes under the module users import them from
(``_public.publish`` sets ``__module__`` to ``trio_realtime.protocol``, on the methods too).
mutmut 3 records which tests reach a function by the function's ``__module__`` and looks its
mutants up by the module of the file that defines it, so under the public name no test is found
for any method of ``Session``, ``ChannelSession``, ``PresenceTracker`` or ``RefCounter``, and
their mutants are reported as having no tests.

Loaded only by mutmut (``-p _mutation`` in ``[tool.mutmut]``, with ``tests`` on ``PYTHONPATH``),
this plugin imports the protocol layer, then gives every function of the package's modules, and
every method and property accessor of their classes, back the module its code belongs to (the
``__name__`` of its globals). Nothing else changes: the mutated code runs as it always does.
"""

from __future__ import annotations

import sys
from types import FunctionType

import trio_realtime
import trio_realtime.protocol

PACKAGE = trio_realtime.__name__


def _restore(function: object) -> int:
    """Give ``function`` back its defining module; return 1 if it had another one."""
    target = getattr(function, "__func__", function)
    if not isinstance(target, FunctionType):
        return 0
    home = target.__globals__.get("__name__")
    if not isinstance(home, str) or target.__module__ == home:
        return 0
    target.__module__ = home
    return 1


def restore_modules() -> int:
    """Restore the functions of every loaded module of the package; return how many moved."""
    moved = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        for value in list(vars(module).values()):
            moved += _restore(value)
            if isinstance(value, type) and value.__module__.startswith(PACKAGE):
                for attribute in list(vars(value).values()):
                    if isinstance(attribute, property):
                        for accessor in (attribute.fget, attribute.fset, attribute.fdel):
                            moved += _restore(accessor)
                    else:
                        moved += _restore(attribute)
    return moved


RESTORED = restore_modules()
