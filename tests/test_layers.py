"""Three layers, imports pointing down only: core (no Lightning) <- training (Lightning) <- commands.

Read from the source with ``ast`` (every import, also those inside functions), so a lazy import
cannot hide an upward edge; and checked by importing in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sgm_lightning"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported sgm_lightning module, at module level)`` for every import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            subs = [f"{mod}.{a.name}" for a in node.names if _exists(f"{mod}.{a.name}")]
            targets = subs or [mod]
        else:
            continue
        out += [(t, id(node) in top) for t in targets if t == "sgm_lightning" or t.startswith("sgm_lightning.")]
    return out


def _exists(module: str) -> bool:
    p = PKG.parent.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _layer(module: str) -> str:
    parts = module.split(".")
    if module in ("sgm_lightning.cli", "sgm_lightning.__main__") or parts[1:2] == ["commands"]:
        return "commands"
    if parts[1:2] == ["training"]:
        return "training"
    if parts[1:2] == ["lab"]:
        return "lab"
    return "core"


GRAPH = {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_the_layers_are_the_folders():
    layers = {_layer(m) for m in GRAPH}
    assert layers == {"core", "training", "lab", "commands"}
    assert (PKG / "training" / "__init__.py").is_file() and (PKG / "commands" / "__init__.py").is_file()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    """core imports no higher layer; training imports neither commands nor the lab; only the
    ``sgm`` entry point (cli) imports commands; the lab reaches training only inside a function
    (E7 trains a model), so importing the lab costs no Lightning."""
    mine = _layer(module)
    for target, at_top in GRAPH[module]:
        theirs = _layer(target)
        if theirs == "commands":
            assert mine == "commands", f"{module} imports {target}: nothing outside commands/ imports it"
        if mine == "core":
            assert theirs == "core", f"{module} (core) imports {target} ({theirs})"
        if mine == "training":
            assert theirs in ("core", "training"), f"{module} (training) imports {target} ({theirs})"
        if mine == "lab" and theirs == "training":
            assert not at_top, f"{module} imports {target} at module level: the lab must import without Lightning"


def test_no_import_cycle():
    """Following every import (lazy ones too), no module reaches itself again. A package's
    ``__init__`` importing its own submodules is the usual re-export and is not an edge back."""
    edges = {m: {t for t, _ in imps if t in GRAPH and t != m} for m, imps in GRAPH.items()}
    for m in edges:  # a submodule "importing" its parent package is an import of a sibling; skip it
        edges[m] = {t for t in edges[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_inference_sampling_and_the_lab_import_no_lightning(tmp_path):
    """Importing the checkpoint loader, the samplers and the lab, and loading a checkpoint,
    imports neither ``pytorch_lightning`` nor ``lightning``."""
    import torch

    from sgm_lightning.checkpoint import build_net
    from sgm_lightning.config import data_shape, load_config, to_yaml

    cfg = load_config("toy_mixture", ["model.kwargs.hidden=8"])
    net = build_net(cfg.model, data_shape(cfg.data), cfg.sde, cfg.data.centered)
    ckpt = tmp_path / "m.ckpt"
    torch.save({"sgm_config": to_yaml(cfg), "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}},
               ckpt)
    code = (
        "import sys\n"
        "import sgm_lightning.checkpoint, sgm_lightning.sampling, sgm_lightning.lab\n"
        f"m = sgm_lightning.checkpoint.load_model({str(ckpt)!r})\n"
        "r = sgm_lightning.sampling.run_sampler('pc', m.sde, m.score_fn(), (2, 2), steps=3)\n"
        "assert r.x.shape == (2, 2)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('pytorch_lightning', 'lightning'))\n"
        "assert not bad, bad[:5]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


def test_python_dash_m_runs_the_sgm_command():
    out = subprocess.run([sys.executable, "-m", "sgm_lightning", "--help"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for command in ("train", "sample", "fid", "lab", "export"):
        assert command in out.stdout
