"""A user's text files (recipes, model specs, sidecars) read with a size cap, and YAML with a depth and size limit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from optkit.types.errors import UsageError

RECIPE_CAP = 1 << 20      # a recipe or a model spec (optkit.yaml): 1 MiB
YAML_MAX_DEPTH = 64       # nesting of a recipe or spec: far beyond any real one, far below Python's recursion limit
YAML_MAX_VALUES = 1_000_000  # values of a recipe or spec with its aliases expanded


def read_text_capped(path: str | os.PathLike[str], cap: int, what: str) -> str:
    """The text of a user's file, refused (UsageError, exit 2) when it is over ``cap`` bytes: a recipe, spec or
    sidecar that large is not one, and reading it whole would only exhaust memory. ``what`` names it."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        size = path.stat().st_size
        raise UsageError(f"{what} {path} is {size:,} bytes; optkit reads at most {cap:,} ({cap >> 20} MiB)",
                         hint=f"Is {path.name} the right file?")
    return data.decode()


def yaml_loader() -> type[Any]:
    """A safe YAML loader class that refuses nesting deeper than ``YAML_MAX_DEPTH`` with a YAML error (PyYAML's
    composer recurses per level: 100,000 nested brackets would end in a RecursionError)."""
    global _DepthLimitedLoader
    if _DepthLimitedLoader is None:
        import yaml

        class DepthLimitedLoader(yaml.SafeLoader):
            _depth = 0

            def compose_node(self, parent: Any, index: Any) -> Any:
                self._depth += 1
                try:
                    if self._depth > YAML_MAX_DEPTH:
                        event = self.peek_event()
                        raise yaml.composer.ComposerError(
                            None, None, f"nested more than {YAML_MAX_DEPTH} levels deep", event.start_mark)
                    node = super().compose_node(parent, index)
                finally:
                    self._depth -= 1
                # values once aliases are expanded (what validating walks): '&a [x, x]' nested ten levels of
                # '[*a, *a, ...]' is a few lines of YAML and billions of values
                sizes = self.__dict__.setdefault("_sizes", {})
                if id(node) not in sizes:
                    children = (node.value if isinstance(node, yaml.SequenceNode) else
                                [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else [])
                    sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
                    if sizes[id(node)] > YAML_MAX_VALUES:
                        raise yaml.composer.ComposerError(
                            None, None, f"expands to more than {YAML_MAX_VALUES:,} values (through aliases)",
                            node.start_mark)
                return node

        _DepthLimitedLoader = DepthLimitedLoader
    return _DepthLimitedLoader


_DepthLimitedLoader: type[Any] | None = None


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the nesting limit of ``yaml_loader`` (raises ``yaml.YAMLError``)."""
    import yaml

    return yaml.load(text, Loader=yaml_loader())  # a SafeLoader subclass: no arbitrary objects

