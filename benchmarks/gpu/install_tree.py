"""Make the working tree's edgeport distributions importable, entry points included.

``run.sh`` runs the working tree's edgeport on the GPU machine whether or not it was installed
there (a machine without PyPI may not even have the build backend, hatchling). The code is put
on ``PYTHONPATH`` (the ``*/src`` folders) and this writes, into a ``--target`` folder that is also
on ``PYTHONPATH``, the ``.dist-info`` metadata ``importlib.metadata`` reads: name, version and
the entry points from each ``pyproject.toml`` (subcommands, datasets, baselines), plus an
``edgeport`` launcher.

    python3 benchmarks/gpu/install_tree.py runs/gpu-site
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomllib  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = ("runtime", "train", "export")


def write_dist_info(site: Path, pyproject: Path) -> Path:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    sections = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    lines = []
    for group, items in sections.items():
        if items:
            lines += [f"[{group}]", *(f"{k} = {v}" for k, v in items.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    (info / "INSTALLER").write_text("benchmarks/gpu/install_tree.py\n", encoding="utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="folder put first on PYTHONPATH")
    args = parser.parse_args(argv)
    for dist in DISTRIBUTIONS:
        info = write_dist_info(args.target, REPO / dist / "pyproject.toml")
        print(f"wrote {info}")
    launcher = args.target / "bin" / "edgeport"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m edgeport.runtime.cli "$@"\n', encoding="utf-8"
    )
    launcher.chmod(0o755)
    src = ":".join(str(REPO / d / "src") for d in DISTRIBUTIONS)
    print(f"PYTHONPATH={args.target}:{src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
