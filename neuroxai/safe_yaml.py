"""Reading YAML that someone else wrote: protocols, model and training configs, constructor kwargs.

``yaml.safe_load`` already refuses Python tags (``!!python/object``), so no code runs. It still
accepts three things a shared document should not carry:

* **alias bombs** ("billion laughs"): nine nested anchors expand a 1 KB file into 10⁹ values,
  which takes gigabytes once pydantic or ``json.dumps`` walks it. The composed tree (before
  expansion) is measured, and a document expanding to more than ``MAX_NODES`` values is refused;
  ordinary anchors (a block of parameters reused twice) stay allowed. Self-referencing aliases are
  refused.
* **duplicate keys**, of which PyYAML silently keeps the last (``epochs: 5`` … ``epochs: 50``):
  refused with both line numbers.
* **huge files**: more than ``MAX_BYTES`` are refused before parsing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 1 << 20        # a protocol is a few KB
MAX_NODES = 100_000        # values after alias expansion


def _expanded_size(node: yaml.Node, path, memo: dict, stack: set) -> int:
    key = id(node)
    if key in memo:
        return memo[key]
    if key in stack:
        raise ConfigError("the YAML refers to itself (a recursive alias)", path=path,
                          found=f"line {node.start_mark.line + 1}", fix="write the values out without *aliases")
    stack.add(key)
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for k, _ in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                if k.value in keys:
                    raise ConfigError(f"duplicate key {k.value!r}", path=path,
                                      expected="each key once per mapping",
                                      found=f"line {keys[k.value]} and line {k.start_mark.line + 1}",
                                      fix="delete one of them (YAML would silently keep the last)")
                keys[k.value] = k.start_mark.line + 1
        n = 1 + sum(_expanded_size(k, path, memo, stack) + _expanded_size(v, path, memo, stack)
                    for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(v, path, memo, stack) for v in node.value)
    else:
        n = 1
    stack.discard(key)
    memo[key] = n
    return n


def load_yaml(source: str | Path, *, text: str | None = None, what: str = "YAML file") -> Any:
    """Parse a YAML document safely (see the module docstring); errors are :class:`ConfigError`
    naming the file. ``text`` overrides reading ``source`` (then ``source`` only names it)."""
    path = Path(source)
    if text is None:
        from .safepath import describe_special

        special = describe_special(path)  # a FIFO would block the read forever, /dev/zero never end
        if special is not None:
            raise ConfigError(f"the {what} is {special}", path=path, expected=f"a regular {what} (YAML text)",
                              found=special, fix="point to the YAML file itself")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ConfigError(f"cannot read the {what}", path=path, found=f"{type(exc).__name__}: {exc}",
                              fix="check the path") from exc
        if size > MAX_BYTES:
            raise ConfigError(f"the {what} is too large", path=path, expected=f"at most {MAX_BYTES} bytes",
                              found=f"{size} bytes", fix="is this the right file?")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the {what} as UTF-8 text", path=path,
                              found=f"{type(exc).__name__}: {exc}", fix="save it as a UTF-8 text file") from exc
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(f"the {what} is too large", path=path, expected=f"at most {MAX_BYTES} bytes",
                          found=f"{len(text)} characters", fix="is this the right file?")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"the {what} is not valid YAML", path=path, found=str(exc),
                          fix="fix the YAML syntax at the line shown") from exc
    if node is None:
        return None
    n = _expanded_size(node, path, {}, set())
    if n > MAX_NODES:
        raise ConfigError(f"the {what} expands to too many values (YAML aliases)", path=path,
                          expected=f"at most {MAX_NODES} values", found=f"{n} values after expanding *aliases",
                          fix="write the values out; a document this large is an alias bomb, not a config")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a tag safe_load refuses (!!python/object)
        raise ConfigError(f"the {what} is not valid YAML", path=path, found=str(exc),
                          fix="plain YAML only: no !!python tags") from exc


def compose_yaml(text: str) -> yaml.Node | None:
    """The composed node tree (for line numbers in error messages); the text was checked by ``load_yaml``."""
    return yaml.compose(text, Loader=yaml.SafeLoader)
