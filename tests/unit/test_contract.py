"""The contract package: the one home of what the API and the workers agree on, and free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from contract import digits, keys, queues, roles

REPO = Path(__file__).resolve().parents[2]
# The product's code outside the contract (tests may spell names out to check them).
PRODUCT = ("api", "bench", "models", "stack", "training", "workers")


def _agreed_strings() -> dict[str, str]:
    agreed = {name: "task name" for name in (*queues.TASK_QUEUES, queues.TASK_WEBHOOK)}
    agreed |= {name: "queue name" for name in (*queues.QUEUES, queues.QUEUE_WEBHOOKS)}
    # "digits" is also a job kind and a dataset's folder: only the roles with a ":" are unambiguous.
    agreed |= {role: "served role" for role in roles.SERVED if ":" in role}
    agreed |= {name: "served checkpoint" for name in roles.SERVED.values()}
    return agreed


def _offences(path: Path) -> list[str]:
    agreed = _agreed_strings()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in agreed:
                found.append(f"{where}: the {agreed[node.value]} {node.value!r}")
            elif node.value.startswith(keys.PREFIX):
                found.append(f"{where}: the Redis key {node.value!r}")
        elif isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts):
            if tuple(e.value for e in node.elts) == digits.FRAME_TIMESTEPS:
                found.append(f"{where}: the frame timesteps")
    return found


def test_no_module_outside_the_contract_defines_what_both_sides_agree_on() -> None:
    offences = [o for folder in PRODUCT for path in sorted((REPO / folder).rglob("*.py")) for o in _offences(path)]
    assert not offences, "import these from contract/ instead:\n" + "\n".join(offences)


def test_the_walk_finds_a_copy(tmp_path: Path) -> None:
    copy = REPO / "workers" / "_copy_for_test.py"
    copy.write_text(f'QUEUE = "{queues.QUEUE_SMALL}"\nFRAMES = {digits.FRAME_TIMESTEPS!r}\nKEY = "{keys.PREFIX}x"\n')
    try:
        assert len(_offences(copy)) == 3
    finally:
        copy.unlink()


def test_the_api_side_imports_neither_torch_nor_the_workers() -> None:
    """Every module of contract/ and api/, and an app built: no torch, no models, no workers, no launcher;
    and the launcher (make run's parent process, which must not touch CUDA before forking) no torch either."""
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in ("contract", "api")
        for p in (REPO / package).rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "sys.modules['api.main'].create_app()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models', 'workers', 'stack')))\n"
        "import stack.launcher\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == ["[]", "[]"]


def test_a_celery_parent_process_imports_no_torch() -> None:
    """What a worker's main process imports (its app and task modules) stays torch-free: models load in the
    pool children, the parent forks them without torch's libraries and exits without their exit handlers
    (which page in hundreds of MB of CUDA libraries and have held a SIGTERMed worker past its grace)."""
    code = (
        "import sys, workers.celery_app, workers.tasks, workers.webhook_app\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.split() == ["[]"]


def test_api_files_import_the_workers_only_through_the_contract() -> None:
    offences = []
    for path in sorted((REPO / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offences += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("workers", "models", "stack")]
    assert not offences
