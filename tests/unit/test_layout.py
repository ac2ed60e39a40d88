"""The package's shape: no import cycles (function-level imports included), no import-time side
effects, and one registration path that a plug-in can use from outside the package."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "atlbench"


def module_graph() -> dict[str, set[str]]:
    """Every import between atlbench modules, wherever it sits (module, function, TYPE_CHECKING)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules[".".join(parts)] = path
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                head = ".".join([*base, node.module] if node.module else base)
                targets = [head, *(f"{head}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    edges = module_graph()
    assert len(edges) > 50  # the walk really saw the package
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_schema_imports_no_family() -> None:
    families = (
        "atlbench.sources",
        "atlbench.targets",
        "atlbench.strategies",
        "atlbench.estimators",
    )
    imported = module_graph()["atlbench.suite"]
    assert not [m for m in imported if m.startswith(families)]


def test_importing_atlbench_has_no_side_effects() -> None:
    """matplotlib's backend, the umask and the HF offline variables are the user's."""
    code = (
        "import os, matplotlib\n"
        "matplotlib.use('svg')\n"
        "before = (matplotlib.get_backend(), os.umask(0o022), dict(os.environ))\n"
        "os.umask(0o022)\n"
        "import atlbench._components, atlbench.report._plots, atlbench.report._html\n"
        "import atlbench._cache\n"
        "import atlbench._hub, atlbench.cli, atlbench.sweep\n"
        "atlbench._hub.hub_reachable()\n"
        "after = (matplotlib.get_backend(), os.umask(0o022), dict(os.environ))\n"
        "assert before == after, (before[:2], after[:2], set(after[2]) ^ set(before[2]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # refused at once: the probe says 'unreachable'
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_plugin_kind_registers_from_outside_and_runs(tmp_path: Path) -> None:
    """A new source kind is one module: a params model and a resolve method, one decorator."""
    import torch
    import yaml
    from conftest import tiny_suite
    from pydantic import BaseModel, ConfigDict

    from atlbench.registry import SOURCE_KINDS, register_source
    from atlbench.sources._base import Encoder, Source, SourceKind, images_to_tensor
    from atlbench.sweep import SweepOptions, run_sweep

    class PixelParams(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        size: int = 8

    class PixelEncoder(Encoder):
        """Downsampled pixels as features: a source with no weights at all."""

        def __init__(self, size: int) -> None:
            super().__init__()
            self.size, self.feature_dim = size, 3 * size * size
            self.scale = torch.nn.Parameter(torch.ones(1))

        def prepare(self, inputs):  # type: ignore[no-untyped-def]
            return images_to_tensor(inputs, self.size, (0.5,) * 3, (0.5,) * 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * x.flatten(1)

        def layer_names(self) -> list[str]:
            return []

    @register_source("pixels_plugin")
    class PixelSource(SourceKind):
        Params = PixelParams

        @classmethod
        def resolve(cls, source_id, params, options):  # type: ignore[no-untyped-def]
            def build(pretrained: bool) -> Encoder:
                return PixelEncoder(params.size)

            return Source(source_id, cls.name, "image", f"pixels@{params.size}",
                          {"pixels": params.size}, params, build)  # fmt: skip

    try:
        suite = tiny_suite(
            sources=[{"id": "px", "pixels_plugin": {"size": 8}}],
            strategies=["knn"],
            estimators=["logme"],
        )
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
        options = SweepOptions(
            results_root=tmp_path / "r", reports_root=tmp_path / "rep", quiet=True
        )
        summary = run_sweep(tmp_path / "s.yaml", options)
        assert summary.ran == 2 and not summary.failed  # knn and its random-init twin
        bad = tiny_suite(sources=[{"id": "px", "pixels_plugin": {"sise": 8}}])
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
        from atlbench.errors import SuiteError

        with pytest.raises(
            SuiteError,
            match=r"sources\[0\]\.pixels_plugin\.sise: unknown key 'sise' \(did you mean 'size'",
        ):
            run_sweep(tmp_path / "bad.yaml", options)
    finally:
        SOURCE_KINDS.remove("pixels_plugin")


# -- the public boundary --------------------------------------------------------------------------

# every package, and every top-level module users import from (README, DESIGN, the plug-in tests)
PUBLIC_MODULES = (
    "atlbench",
    "atlbench._api",
    "atlbench.analysis",
    "atlbench.commands",
    "atlbench.datapipe",
    "atlbench.errors",
    "atlbench.estimators",
    "atlbench.executors",
    "atlbench.protocol",
    "atlbench.registry",
    "atlbench.similarity",
    "atlbench.sources",
    "atlbench.strategies",
    "atlbench.targets",
)
README = PACKAGE.parent / "README.md"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_names_exist(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    names = mod.__dict__.get("__all__")
    assert isinstance(names, list), f"{module} has no __all__ list"
    assert all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize(
    ("package", "decorator"),
    [
        ("atlbench.sources", "register_source"),
        ("atlbench.targets", "register_target"),
        ("atlbench.strategies", "register_strategy"),
        ("atlbench.estimators", "register_estimator"),
    ],
)
def test_each_family_exports_its_decorator(package: str, decorator: str) -> None:
    import importlib

    assert decorator in importlib.import_module(package).__all__


def readme_imports(text: str) -> dict[str, list[str]]:
    """``from atlbench.X import a, b`` lines and ``atlbench.f(`` calls of the README's code."""
    found: dict[str, list[str]] = {}
    for module, names in re.findall(r"^from (atlbench[\w.]*) import ([\w, ]+)$", text, re.M):
        found.setdefault(module, []).extend(n.strip() for n in names.split(",") if n.strip())
    calls = re.findall(r"\batlbench\.(\w+)\(", text)
    found.setdefault("atlbench", []).extend(sorted(set(calls)))
    return found


def test_the_readme_reader_finds_imports() -> None:
    text = "x\nfrom atlbench.estimators import logme, gbc\nviews = atlbench.run_suite('s')\n"
    assert readme_imports(text) == {
        "atlbench.estimators": ["logme", "gbc"],
        "atlbench": ["run_suite"],
    }


def test_every_name_the_readme_imports_is_public() -> None:
    import importlib

    found = readme_imports(README.read_text())
    assert "atlbench.estimators" in found and len(found["atlbench"]) >= 2  # it read the README
    for module, names in found.items():
        public = importlib.import_module(module).__all__
        assert not set(names) - set(public), (module, sorted(set(names) - set(public)))


# -- plug-in strategies: typed params, validated at the edge as before ----------------------------


def test_a_typed_plugin_strategy_gets_its_params_and_rejects_unknown_keys(tmp_path: Path) -> None:
    """``Strategy[P]`` types ``ctx.params`` for the checker; at run time the suite is still
    validated against ``Params`` (a key the model lacks is a one-line suite error) and the
    strategy receives the validated model."""
    from dataclasses import replace

    import yaml
    from conftest import tiny_suite
    from pydantic import Field

    from atlbench.errors import SuiteError
    from atlbench.registry import STRATEGIES
    from atlbench.strategies import (
        CellContext,
        CellOutcome,
        Strategy,
        StrategyParams,
        register_strategy,
    )
    from atlbench.strategies.frozen import KNN, KNNParams
    from atlbench.study import parse_study
    from atlbench.sweep import SweepOptions, run_sweep

    class OneKParams(StrategyParams):
        k: int = Field(3, ge=1)

    seen: list[StrategyParams] = []

    @register_strategy("one_k_plugin")
    class OneK(Strategy[OneKParams]):
        """kNN with one fixed k: the built-in kNN with a one-value grid."""

        Params = OneKParams
        reads_features = True

        def run(self, ctx: CellContext[OneKParams]) -> CellOutcome:
            seen.append(ctx.params)
            return KNN().run(replace(ctx, params=KNNParams(k_grid=(ctx.params.k,))))

    @register_strategy("bare_plugin")
    class Bare(Strategy):  # type: ignore[type-arg]  # no Params: the empty model, as before
        def run(self, ctx: CellContext) -> CellOutcome:  # type: ignore[type-arg]
            raise NotImplementedError

    try:
        good = tiny_suite(strategies=[{"name": "one_k_plugin", "k": 2}], estimators=[])
        (spec,) = parse_study(good).strategies
        assert type(spec.params) is OneKParams and spec.params.k == 2
        assert parse_study(tiny_suite(strategies=["bare_plugin"])).strategies[0].params == (
            StrategyParams()
        )
        for strategy, message in [
            ({"name": "one_k_plugin", "kk": 2}, r"kk: unknown key 'kk' \(did you mean 'k'\?\)"),
            ({"name": "one_k_plugin", "k": 0}, r"strategies\[0\]\.k: .*greater than or equal"),
            ({"name": "bare_plugin", "k": 2}, r"strategies\[0\]\.k: unknown key 'k'"),
        ]:
            with pytest.raises(SuiteError, match=message):
                parse_study(tiny_suite(strategies=[strategy]))
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(good))
        options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path / "p", quiet=True)
        summary = run_sweep(tmp_path / "s.yaml", options)
        assert summary.ran == 2 and not summary.failed  # the strategy and its random-init twin
        assert seen == [OneKParams(k=2)] * 2 and all(type(p) is OneKParams for p in seen)
    finally:
        STRATEGIES.remove("one_k_plugin")
        STRATEGIES.remove("bare_plugin")
