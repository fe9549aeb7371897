"""The package's layering (issue 12): no module imports a higher layer, and only ``runtime/`` imports Ray.

Every import counts, also the lazy ones inside functions and those under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ssm_metarl_ray"

# lowest first; a module may import its own layer and the ones below
LAYERS = [
    {"envs", "utils.seeding", "utils.threads", "utils.progress", "utils.stats", "utils.atomic", "anchors"},
    {"config", "presets"},
    {"models"},
    {"types"},
    {"algorithms", "replay"},
    {"utils.checkpoint", "utils.resources"},
    {"rollout", "adapters"},
    {"training"},
    {"runtime"},
    {"sweeps"},
    {"run", "viz"},
    {"cli", "benchmark_cli", "rollout_cli", "__main__"},
]


def layer(module: str) -> int:
    """Layer of ``ssm_metarl_ray.<module>`` (the longest matching entry of LAYERS)."""
    parts = module.split(".")
    for n in (2, 1):
        key = ".".join(parts[:n])
        for i, names in enumerate(LAYERS):
            if key in names:
                return i
    raise AssertionError(f"ssm_metarl_ray.{module} is in no layer of LAYERS")


def imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return out


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts:
            yield ".".join(parts), path


def test_no_module_imports_a_higher_layer():
    upward = []
    for me, path in modules():
        for mod, line in imports(path):
            if mod.startswith("ssm_metarl_ray.") and layer(mod.removeprefix("ssm_metarl_ray.")) > layer(me):
                upward.append(f"{path.relative_to(PKG.parent)}:{line}: {me} imports {mod}")
    assert not upward, "\n".join(upward)


def test_only_runtime_imports_ray():
    outside = [f"{path.relative_to(PKG.parent)}:{line}: {mod}" for me, path in modules()
               for mod, line in imports(path)
               if (mod == "ray" or mod.startswith("ray.")) and not me.startswith("runtime")]
    assert not outside, "\n".join(outside)
