"""Name -> callable registries. YAML names equal registry keys.

A registry also knows each entry's configurable parameters, read once from its signature at
registration: every named parameter except the ``inputs`` a caller passes (``model, x, target``
for a method). :meth:`Registry.check` is the one place an unknown parameter (a misspelt YAML key)
becomes an error naming the allowed ones.
"""
from __future__ import annotations

import inspect
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError, NeuroXAIError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small dict of named entries with a decorator to add to it.

    >>> METHODS = Registry("attribution method", inputs=("model", "x", "target"))
    >>> @METHODS.register("gradient")
    ... def gradient(model, x, target, *, abs: bool = False): ...
    >>> METHODS.params("gradient")
    ('abs',)

    ``inputs``: the parameters a caller passes, not configurable; ``error``: the error class of an
    unknown parameter (a :class:`ConfigError` unless the layer has its own).
    """

    def __init__(self, kind: str, *, inputs: tuple[str, ...] = (),
                 error: type[NeuroXAIError] = ConfigError):
        self.kind = kind
        self.inputs = tuple(inputs)
        self.error = error
        self._entries: dict[str, T] = {}
        self._params: dict[str, tuple[str, ...] | None] = {}
        self._facts: dict[str, dict] = {}

    def register(self, name: str, **facts) -> Callable[[T], T]:
        """Add an entry; ``facts`` are what the rest of neuroxai needs to know about it, given
        once here (a method's ``role`` and ``needs``; ``check``: a function of the parameters that
        refuses what the signature cannot say, run when a protocol loads; …), read back with
        :meth:`facts`."""
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._params[name] = _config_params(obj, self.inputs) if callable(obj) else None
            self._facts[name] = dict(facts)
            return obj

        return deco

    def facts(self, name: str) -> dict:
        """The facts ``name`` was registered with (a copy; ``{}`` when none)."""
        self[name]  # unknown name → its registry's error
        return dict(self._facts[name])

    def params(self, name: str) -> tuple[str, ...] | None:
        """The parameters ``name`` accepts from a config (its API), or ``None`` when it takes
        ``**kwargs`` and checks them itself."""
        self[name]  # unknown name → ConfigError
        return self._params[name]

    def check(self, name: str, params, *, path: str | None = None) -> None:
        """Raise ``self.error`` naming the allowed parameters if ``params`` has one ``name`` does
        not accept; ``path`` is where the parameters came from (``metrics.auroc.params``)."""
        allowed = self.params(name)
        bad = [] if allowed is None else sorted(set(params) - set(allowed))
        if bad:
            raise self.error(f"unknown parameter(s) {bad} for {self.kind} {name!r}", path=path,
                             expected=f"some of {list(allowed)}", found=bad,
                             fix=f"use only these parameters of {name!r} (names are part of its API)")

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}",
                expected=f"one of {sorted(self._entries)}",
                found=repr(name),
                fix=f"use one of the registered {self.kind} names",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self):
        return sorted(self._entries.items())


def _config_params(fn: Callable, inputs: tuple[str, ...]) -> tuple[str, ...] | None:
    """The named parameters of ``fn`` (through ``functools.wraps``) less ``inputs``; ``None`` if it
    takes ``**kwargs``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or a class without a readable signature
        return None
    ps = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in ps):
        return None
    return tuple(p.name for p in ps if p.kind is not p.VAR_POSITIONAL and p.name not in inputs)
