"""``python -m bench.install_sizes [--roles api,worker] [--json docs/install-sizes.json]``: what each role installs.

For each role of ``pyproject.toml`` (an extra, or the base alone), a fresh virtual environment gets the project
installed as a deployment installs it: not editable, from a copy of the working tree, with the pinned torch first
where the role needs torch (``make install``'s and the Dockerfile's order). Then the role's own import is run in
that environment, outside the checkout (so nothing is imported from it), and what it pulled in is checked (the
API: no torch imported, none installed), and ``du -sm`` measures its site-packages. Each role's numbers are
written under its name into the JSON file, with the commands that produced them; a run of some roles keeps the
others' last numbers. Only the standard library: it runs before any install (``make install-sizes``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT = "dlcv-genserve"
TORCH = ("torch", "torchvision")


@dataclass(frozen=True)
class Role:
    extras: tuple[str, ...]
    # Python run in the role's environment; its last printed line is the check's output.
    check: str
    # What that line must be, and whether the role installs torch (checked both ways).
    expect: str
    torch: bool


ROLES: dict[str, Role] = {
    "contract": Role(
        (),
        "import sys, contract.broker, contract.jobs, contract.settings; print('torch' in sys.modules)",
        "False",
        torch=False,
    ),
    "api": Role(("api",), "import sys, api.main; print('torch' in sys.modules)", "False", torch=False),
    "worker": Role(
        ("worker",),
        # What a pool child loads (the task module alone imports no torch: a Celery parent process needs none),
        # and the CPU runtime the workers choose engines from.
        "import sys, workers.tasks, workers.registry, workers.runners, openvino; print('torch' in sys.modules)",
        "True",
        torch=True,
    ),
}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _torch_pins(pyproject: dict) -> list[str]:
    """torch's and torchvision's requirements as pyproject pins them (in any extra)."""
    pins = {
        line.split("==")[0].strip(): line.strip()
        for lines in pyproject["project"]["optional-dependencies"].values()
        for line in lines
        if line.split("==")[0].strip() in TORCH and "==" in line
    }
    return [pins[name] for name in TORCH]


def role_requirements(pyproject: dict, extras: tuple[str, ...] | set[str]) -> list[str]:
    """The base dependencies and those of ``extras``, following the extras' references to the project's own."""
    optional = pyproject["project"]["optional-dependencies"]
    requirements = list(pyproject["project"]["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            if line.startswith(f"{PROJECT}["):
                todo += line[len(PROJECT) + 1 : line.index("]")].split(",")
            else:
                requirements.append(line)
    return requirements


def _needs_torch(pyproject: dict, extras: tuple[str, ...]) -> bool:
    names = (re.split(r"[=<>!~\[;\s]", line, maxsplit=1)[0] for line in role_requirements(pyproject, extras))
    return any(name in TORCH for name in names)


def _copy_tree(pyproject: dict, dest: Path) -> Path:
    """The files a build of the project reads, copied out of the checkout (a build writes build/ and *.egg-info
    beside its sources, which must not land in a working tree that others share)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in sorted(packages):
        if (REPO / package).is_dir():
            shutil.copytree(REPO / package, dest / package, ignore=ignore)
    return dest


def _run(command: list[str], log: list[dict], cwd: Path, env: dict[str, str]) -> str:
    started = time.perf_counter()
    print("$", shlex.join(command).split("\n")[0], flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    log.append({"command": shlex.join(command), "seconds": round(time.perf_counter() - started, 1)})
    if done.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


# Run in the role's environment: its distributions, largest first, in MB.
_LARGEST = """
import importlib.metadata as m, json
sizes = {}
for d in m.distributions():
    total = 0
    for f in d.files or []:
        p = f.locate()
        if p.is_file():
            total += p.stat().st_size
    sizes[d.metadata["Name"]] = round(total / 2**20, 1)
print(json.dumps(sorted(sizes.items(), key=lambda kv: -kv[1])))
"""


def measure(name: str, role: Role, workdir: Path, source: Path, pyproject: dict, keep: bool, command: str) -> dict:
    venv = workdir / f"v-{name}"
    if venv.exists():
        shutil.rmtree(venv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    commands: list[dict] = []
    started = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(venv)], commands, workdir, env)
    python, pip = str(venv / "bin" / "python"), str(venv / "bin" / "pip")
    if _needs_torch(pyproject, role.extras):
        # torch first and pinned, as `make install` and the Dockerfile's worker stage install it.
        _run([pip, "install", "-q", *_torch_pins(pyproject)], commands, workdir, env)
    target = f"{source}[{','.join(role.extras)}]" if role.extras else str(source)
    _run([pip, "install", "-q", target], commands, workdir, env)
    install_seconds = round(time.perf_counter() - started, 1)

    # The role's import, run from the venv's folder: the checkout is not on sys.path.
    output = _run([python, "-c", role.check], commands, venv, env).strip().splitlines()[-1]
    frozen = _run([pip, "list", "--format=freeze"], commands, venv, env).splitlines()
    torch_installed = sorted(line for line in frozen if "torch" in line.lower() or line.lower().startswith("nvidia"))
    checks = {
        "import": {"code": role.check, "output": output, "expected": role.expect, "ok": output == role.expect},
        "torch_distributions": {
            "command": f"{pip} list | grep -iE 'torch|^nvidia'",
            "found": torch_installed,
            "ok": bool(torch_installed) == role.torch,
        },
    }
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], commands, venv, env)
    size_command = ["du", "-sm", site.strip()]
    size_mb = int(_run(size_command, commands, venv, env).split()[0])
    largest = json.loads(_run([python, "-c", _LARGEST], commands, venv, env))
    if not keep:
        shutil.rmtree(venv)
    return {
        "command": command,
        "extras": list(role.extras),
        "install": [c["command"] for c in commands if " install " in c["command"]],
        "install_seconds": install_seconds,
        "size_command": shlex.join(size_command),
        "site_packages_mb": size_mb,
        "distributions": len(frozen),
        "largest_mb": dict(largest[:8]),
        "checks": checks,
        "ok": all(check["ok"] for check in checks.values()),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def without_workdir(value: object, workdir: Path) -> object:
    """``value`` with the scratch folder written as ``WORKDIR``: the file is shipped, this machine's paths are not."""
    if isinstance(value, str):
        return value.replace(str(workdir), "WORKDIR")
    if isinstance(value, dict):
        return {key: without_workdir(item, workdir) for key, item in value.items()}
    if isinstance(value, list):
        return [without_workdir(item, workdir) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.install_sizes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--roles", default=",".join(ROLES), help=f"comma-separated, of {', '.join(ROLES)} (default: all)"
    )
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "install-sizes.json", help="where to write")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/genserve-install-sizes"), help="the venvs and the copied tree"
    )
    parser.add_argument("--keep", action="store_true", help="keep the virtual environments (v-ROLE in --workdir)")
    args = parser.parse_args(argv)
    roles = [name.strip() for name in args.roles.split(",") if name.strip()]
    unknown = set(roles) - set(ROLES)
    if unknown:
        parser.error(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")

    pyproject = _pyproject()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = _copy_tree(pyproject, args.workdir / "src")
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.setdefault("roles", {})
    failed = []
    command = shlex.join(["python", "-m", "bench.install_sizes", *(argv if argv is not None else sys.argv[1:])])
    for name in roles:
        print(f"== {name}", flush=True)
        try:
            result = measure(name, ROLES[name], args.workdir, source, pyproject, args.keep, command)
        except RuntimeError as err:
            print(err, file=sys.stderr)
            failed.append(name)
            continue
        report["roles"][name] = without_workdir(result, args.workdir)
        print(f"{name}: {result['site_packages_mb']} MB in site-packages, checks {'ok' if result['ok'] else 'FAILED'}")
        if not result["ok"]:
            failed.append(name)
        report.update(
            {
                "about": "Each role installed alone into a fresh venv (not editable, from a copy of the tree; pinned "
                "torch first where the role needs it), its import checked outside the checkout, and its "
                "site-packages measured with `du -sm` (MiB).",
                "python": platform.python_version(),
                "machine": f"{platform.system()} {platform.machine()}",
            }
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")  # after each role: a long run keeps what it measured
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
