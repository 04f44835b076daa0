"""Present public names under the module users import them from.

Classes and functions are defined in private modules (``trio_realtime._events``) and
re-exported by public ones (``trio_realtime``). Without help, they would print, appear in
tracebacks and in ``help()`` under their private module: ``trio_realtime._exceptions.JoinError``.
:func:`publish` points ``__module__`` at the public module instead, as trio does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The names each public module exports, as given to publish().
_exports: dict[str, frozenset[str]] = {}


def _is_private(module: object, package: str) -> bool:
    if not isinstance(module, str) or not module.startswith(package + "."):
        return False
    return any(part.startswith("_") for part in module.split("."))


def _rename(obj: object, public: str, package: str, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if not _is_private(getattr(obj, "__module__", None), package):
        return
    try:
        obj.__module__ = public
    except (AttributeError, TypeError):  # builtin or immutable objects keep theirs
        return
    if isinstance(obj, type):
        for attribute in vars(obj).values():
            target = getattr(attribute, "__func__", attribute)
            if isinstance(target, property):
                for accessor in (target.fget, target.fset, target.fdel):
                    if accessor is not None:
                        _rename(accessor, public, package, seen)
            elif callable(target):
                _rename(target, public, package, seen)


def publish(public: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``public`` for the classes and functions ``names`` of ``namespace``.

    Only objects still presented under a private module (one with a ``_name`` part) are
    renamed, with their methods. A name that the package itself (``trio_realtime``) also
    exports is presented there, whichever public module publishes it first. Type aliases and
    other values without ``__module__`` are left alone.
    """
    names = list(names)
    _exports[public] = _exports.get(public, frozenset()) | frozenset(names)
    package = public.split(".", maxsplit=1)[0]
    package_names = _exports.get(package, frozenset())
    seen: set[int] = set()
    for name in names:
        if name in namespace:
            target = package if name in package_names else public
            _rename(namespace[name], target, package, seen)
