"""Load a directory of Terraform files into plain Python values, offline.

python-hcl2 parses HCL without providers. Its output keeps HCL's syntax in
strings: literal strings come with their quotes (`'"LIVE"'`), expressions as
`${...}`, block labels quoted, blocks as lists of dicts marked `__is_block__`.
`load_dir` normalises that: quotes are removed from literal strings and
labels, markers dropped, and literal `local.*` strings substituted, so a
check can compare `condition["with_state"] == "LIVE"` and still tell an
expression (`"${var.x}"`) from a literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import hcl2

_LOCAL_REF = re.compile(r"\$\{local\.([A-Za-z0-9_-]+)\}")


def _unquote(value: str) -> str:
    """A quoted HCL string literal without its quotes and escapes."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\\\", "\\")
    return value


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            _unquote(k): _normalise(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__", "__start_line__", "__end_line__")
        }
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def is_expression(value: Any) -> bool:
    """True for an HCL expression (a reference, a call, a template)."""
    return isinstance(value, str) and "${" in value


@dataclass
class Config:
    """The resources, data sources, variables and locals of one directory."""

    path: Path
    resources: dict[tuple[str, str], dict] = field(default_factory=dict)
    data: dict[tuple[str, str], dict] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)

    def of_type(self, rtype: str) -> Iterator[tuple[str, dict]]:
        """(name, body) of each resource of a type, in name order."""
        for (t, name), body in sorted(self.resources.items()):
            if t == rtype:
                yield name, body

    def types(self) -> set[str]:
        return {t for t, _ in self.resources}

    def resolve(self, value: Any) -> Any:
        """Substitutes `${local.X}` where local X is a literal string."""
        if not isinstance(value, str):
            return value
        for _ in range(5):
            def repl(m: re.Match) -> str:
                local = self.locals.get(m.group(1))
                if isinstance(local, str) and not is_expression(local):
                    return local
                return m.group(0)

            new = _LOCAL_REF.sub(repl, value)
            if new == value:
                break
            value = new
        return value


def load_dir(path: str | Path) -> Config:
    """Parses every `*.tf` file directly in `path` (not subdirectories)."""
    path = Path(path)
    cfg = Config(path=path)
    files = sorted(path.glob("*.tf"))
    if not files:
        raise FileNotFoundError(f"no .tf files in {path}")
    for file in files:
        with file.open() as f:
            doc = _normalise(hcl2.load(f))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    cfg.resources[(rtype, name)] = body
        for block in doc.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    cfg.data[(dtype, name)] = body
        for block in doc.get("variable", []):
            for name, body in block.items():
                cfg.variables[name] = body
        for block in doc.get("locals", []):
            cfg.locals.update(block)
    return cfg


def blocks(body: dict, name: str) -> list[dict]:
    """The nested blocks `name { ... }` of a body, static ones only."""
    value = body.get(name, [])
    if isinstance(value, dict):
        return [value]
    return [b for b in value if isinstance(b, dict)]


def first(body: dict, name: str) -> dict | None:
    found = blocks(body, name)
    return found[0] if found else None


def dynamic_contents(body: dict, name: str) -> list[dict]:
    """The `content` of each `dynamic "name"` block of a body."""
    out = []
    for dyn in blocks(body, "dynamic"):
        for label, spec in dyn.items():
            if label == name and isinstance(spec, dict):
                out.extend(blocks(spec, "content"))
    return out


def all_blocks(body: dict, name: str) -> list[tuple[str, dict]]:
    """Static and dynamic blocks `name`, labelled for messages."""
    out = [(f"{name} #{i + 1}", b) for i, b in enumerate(blocks(body, name))]
    out += [(f'dynamic "{name}" #{i + 1}', b) for i, b in enumerate(dynamic_contents(body, name))]
    return out


def as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]
