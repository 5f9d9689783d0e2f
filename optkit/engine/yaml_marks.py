"""Where in a YAML file a validation error points: line and column of a key path.

Pydantic reports locations in the validated structure (``steps[3].options.metod``); the recipe's
YAML writes steps as ``- quantize: {metod: ...}``. This walks the composed YAML node tree along
the path, translating the step shorthand, and returns the position of the key (or value) named.
"""
from __future__ import annotations

from typing import Any

import yaml


def _mapping_get(node: yaml.MappingNode, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == str(key):
            return k, v
    return None


def locate(text: str, loc: tuple[Any, ...]) -> tuple[int, int] | None:
    """1-based (line, column) of the last element of ``loc`` in ``text``; None when it cannot be found."""
    from optkit.types.textio import yaml_loader

    try:
        node = yaml.compose(text, Loader=yaml_loader())  # nesting limited, as when the recipe was read
    except (yaml.YAMLError, RecursionError):
        return None
    mark = node.start_mark if node is not None else None
    in_steps = False
    parts = list(loc)
    i = 0
    while node is not None and i < len(parts):
        part = parts[i]
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            mark = node.start_mark
            # a step written as '- quantize: {...}': 'options' is the mapping's value, 'name' its key
            if in_steps and isinstance(node, yaml.MappingNode) and len(node.value) == 1 and \
                    _mapping_get(node, "name") is None and i + 1 < len(parts) and parts[i + 1] in ("options", "name", "output"):
                key, value = node.value[0]
                if parts[i + 1] == "name":
                    return key.start_mark.line + 1, key.start_mark.column + 1
                if parts[i + 1] == "output":
                    found = _mapping_get(value, "output") if isinstance(value, yaml.MappingNode) else None
                    node = found[1] if found else value
                    mark = found[0].start_mark if found else value.start_mark
                else:
                    node, mark = value, value.start_mark
                i += 2
                continue
            i += 1
            continue
        if isinstance(node, yaml.MappingNode):
            found = _mapping_get(node, part)
            if found is None:
                break
            key, value = found
            in_steps = part == "steps" and i == 0
            mark = key.start_mark if i == len(parts) - 1 else value.start_mark
            node = value
            i += 1
            continue
        break
    return (mark.line + 1, mark.column + 1) if mark is not None else None
