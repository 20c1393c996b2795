"""The rooms stay rooms: no import circle, dependencies point one way, every package is installed, and the
names that run history and operators' run config depend on never change."""

import ast
import graphlib
import tomllib
from pathlib import Path

import pytest

from cx_pipeline.definitions import ROOMS, defs

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package lives in the checkout (pyproject's [tool.setuptools.package-dir]).
PACKAGE_DIRS = {
    "cx_pipeline": ROOT / "cx_pipeline",
    "cx_pipeline.assets": ROOT / "assets",
    "cx_pipeline.checks": ROOT / "checks",
    "cx_pipeline.benchmarks": ROOT / "benchmarks",
}
# The library's rooms, lowest first: a module may import its own room and the rooms below it, never a room beside
# or above it. Everything else in the library (the warehouse that gathers the schemas, the web app, the demo world,
# the CLI) sits above all rooms, and the orchestration (assets, checks, definitions) above the library.
RANKS = {"core": 0, "ingest": 1, "receiving": 2, "storefront": 2, "review": 2, "quality": 2, "kpis": 2}

# Taken from the definitions before the library was split into rooms (December 2026).
NAMES_BEFORE_THE_MOVE = {
    "assets": {
        "delay_notices": "receiving",
        "inquiry_kpis": "cx_kpis",
        "inspection_dhu": "quality",
        "inspection_lots": "quality",
        "inspections": "quality",
        # kpi_weeks and operator_worklist came after the move (#20, the KPI and operator pages)
        "kpi_weeks": "cx_kpis",
        "operator_worklist": "cx_kpis",
        "raw_catalog": "ingest",
        "raw_inquiries": "ingest",
        "raw_on_hand": "ingest",
        "raw_open_orders": "ingest",
        "raw_purchase_orders": "ingest",
        "raw_receipts": "ingest",
        "receipt_confirmation_cycle": "receiving",
        "receipt_discrepancies": "receiving",
        "return_risk": "quality",
        "review_decisions": "catalog_review",
        "stale_products": "catalog_review",
        "stock_position": "storefront",
        "storefront_push_plan": "storefront",
        "storefront_status_push": "storefront",
    },
    "asset_checks": [
        "inspections:data_contract",
        "raw_catalog:data_contract",
        "raw_inquiries:data_contract",
        "raw_on_hand:data_contract",
        "raw_open_orders:data_contract",
        "raw_purchase_orders:data_contract",
        "raw_receipts:data_contract",
        "review_decisions:data_contract",
        "storefront_push_plan:flip_share_within_limit",
        "storefront_push_plan:inputs_passed_contracts",
    ],
    # cx_worklist_job: #20; storefront_fast_path_job and stock_changes_sensor: #19 (sold out to shown out in minutes)
    "jobs": ["__ASSET_JOB", "cx_housekeeping_job", "cx_pipeline_job", "cx_worklist_job", "storefront_fast_path_job"],
    "schedules": ["cx_housekeeping_daily", "cx_pipeline_every_3_hours"],
    # wms_file_drop_sensor came after the move (#18, the WMS as a file drop): this list guards renames, not additions
    # worklist_after_failed_run too (#20, the operator's work list)
    "sensors": [
        "new_receipts_sensor",
        "run_failure_alert",
        "stock_changes_sensor",
        "wms_file_drop_sensor",
        "worklist_after_failed_run",
    ],
    "resources": [
        "alerts",
        "app_store",
        "catalog",
        "contracts",
        "helpdesk",
        "notifications",
        "oms",
        "storefront",
        "warehouse",
        "wms",
    ],
}


def modules() -> dict[str, Path]:
    """Every module of the installed packages by its dotted name."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imported(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in it (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # `from package import module` names a module; `from module import name` names the module
            targets |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {t for t in targets if t in known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    known = modules()
    return {name: imported(path, name, known) - {name} for name, path in known.items()}


def edges() -> list[tuple[str, str]]:
    return [(source, target) for source, targets in import_graph().items() for target in targets]


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_no_module_imports_in_a_circle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as circle:
        pytest.fail(f"an import circle: {' -> '.join(circle.args[1])}")


def test_a_room_imports_only_itself_and_the_rooms_below_it():
    wrong = []
    for source, target in edges():
        here = room(source)
        if here is None:
            continue
        there = room(target)
        if there is None or (there != here and RANKS[there] >= RANKS[here]):
            wrong.append(f"{source} -> {target}")
    assert not wrong, "a room reaches beside or above itself:\n" + "\n".join(wrong)


def test_the_library_never_imports_the_orchestration():
    above = ("cx_pipeline.assets", "cx_pipeline.checks", "cx_pipeline.benchmarks", "cx_pipeline.definitions")
    allowed = {"cx_pipeline.definitions", "cx_pipeline.demo", "cx_pipeline.evaluation", "cx_pipeline.cli"}
    wrong = [
        f"{source} -> {target}"
        for source, target in edges()
        if (room(source) and target.startswith(above))
        or (not source.startswith(above) and source not in allowed and target.startswith(above))
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_generic_top_level_names():
    """`assets`, `checks` and `benchmarks` are packages of cx_pipeline (see pyproject); a top-level import of
    them would load a second copy of every asset from the checkout."""
    generic = {"assets", "checks", "benchmarks", "definitions"}
    wrong = []
    for path in [*ROOT.glob("tests/**/*.py"), *(p for d in PACKAGE_DIRS.values() for p in d.rglob("*.py"))]:
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            wrong += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in generic]
    assert not wrong, "\n".join(wrong)


def test_every_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert {k: str(v.relative_to(ROOT)) for k, v in PACKAGE_DIRS.items()} == config["package-dir"]
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert packages == listed, f"not listed in pyproject: {packages - listed}; listed, not there: {listed - packages}"


@pytest.mark.parametrize("kind", ["assets", "asset_checks", "jobs", "schedules", "sensors", "resources"])
def test_names_are_the_ones_from_before_the_move(kind: str):
    repo = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    now = {
        "assets": {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()},
        "asset_checks": sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys),
        "jobs": sorted(j.name for j in repo.get_all_jobs()),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "resources": sorted(repo.get_top_level_resources()),
    }[kind]
    assert now == NAMES_BEFORE_THE_MOVE[kind]


def test_every_asset_and_check_belongs_to_one_room():
    in_rooms = [n.key for d in ROOMS.values() for n in d.assets or ()]
    checks = [k for d in ROOMS.values() for c in d.asset_checks or () for k in c.check_keys]
    assert sorted(in_rooms) == sorted(defs.resolve_asset_graph().get_all_asset_keys())
    assert sorted(checks) == sorted(defs.resolve_asset_graph().asset_check_keys)
