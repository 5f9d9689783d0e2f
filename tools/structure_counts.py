"""The counts the architecture issues track: key-access sites (x["key"], .get("key")) per package, dict[str, Any]
annotations, modules over 400 lines and functions over 80.  Run: python tools/structure_counts.py [optkit]"""
import ast, re, sys
from pathlib import Path
root = Path(sys.argv[1] if len(sys.argv) > 1 else "optkit")
KEY = re.compile(r"""\[\s*["'][A-Za-z_][\w\-\.]*["']\s*\]|\.get\(\s*["']""")
ANY = re.compile(r"dict\[str,\s*Any\]")
keys, anys, longf, longm = {}, 0, [], []
for p in sorted(root.rglob("*.py")):
    text = p.read_text()
    room = p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "(top)"
    keys[room] = keys.get(room, 0) + len(KEY.findall(text))
    anys += len(ANY.findall(text))
    n = text.count("\n")
    if n > 400: longm.append((n, str(p)))
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ln = node.end_lineno - node.lineno + 1
            if ln > 80: longf.append((ln, f"{p}:{node.name}"))
print("key-access sites per package:", dict(sorted(keys.items())), "total", sum(keys.values()))
print("engine+report+cli:", sum(keys.get(k, 0) for k in ("engine", "report", "cli", "optimize")))
print("dict[str, Any]:", anys)
print("modules > 400 lines:", sorted(longm, reverse=True))
print("functions > 80 lines:", sorted(longf, reverse=True))
