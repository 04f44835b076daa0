"""Present public names under the module users import them from.

Classes and functions are defined in private modules (``trio_realtime._events``) and
re-exported by public ones (``trio_realtime``). Without help, they would print, appear in
tracebacks and in ``help()`` under their private module: ``trio_realtime._exceptions.JoinError``.
:func:`publish` points ``__module__`` at the public module instead, as trio does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The names the package itself exports (``trio_realtime.X``), lazily loaded ones included.
_package_names: set[str] = set()


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


def reserve(package: str, names: Iterable[str]) -> None:
    """Record that ``package`` exports ``names``, before they are loaded (lazy names)."""
    del package  # one package
    _package_names.update(names)


def publish(public: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``public`` for the classes and functions ``names`` of ``namespace``.

    Only objects still presented under a private module (one with a ``_name`` part) are
    renamed, with their methods. An object that another public module re-exports under a name
    the package itself (``trio_realtime``) exports is presented under the package, whichever
    module publishes it first; an object defined in the public module's own private modules
    (``trio_realtime.sync._channel`` for ``trio_realtime.sync``) stays there. Type aliases and
    other values without ``__module__`` are left alone.
    """
    package = public.split(".", maxsplit=1)[0]
    names = [name for name in names if name in namespace]
    if public == package:
        _package_names.update(names)
    seen: set[int] = set()
    for name in names:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        own = isinstance(module, str) and module.startswith(public + ".")
        target = package if name in _package_names and not own else public
        _rename(obj, target, package, seen)
