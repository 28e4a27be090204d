"""Image benchmarks for each example notebook: size, cold vs warm build, start-to-ready.

    python benchmarks/image_bench.py [--examples iris_function,wine_script] [--runs 5]

Per example it builds the context (trained on the host), then:
- image size against the base image plus the installed size of the pinned packages
  (every distribution in the image's venv except pip/setuptools/wheel); goal <= 1.10x;
- a cold build (``no_cache``) against a warm rebuild after editing only the notebook's
  predict cell (re-rendered and retrained), checking that the warm build took the
  ``pip install`` layer and the venv copy from the cache;
- the median of ``--runs`` container starts until ``/readyz`` answers (goal < 1.5 s).
Needs a Docker engine (``bash ../shared/ci/docker-env.sh``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat

from nb2prod import engine as docker_engine
from nb2prod import pipeline
from nb2prod.models import BuildOptions
from nb2prod.runtime import contract_checks
from nb2prod.ship import image, smoke

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("iris_function", "wine_script", "diabetes_regression")
MB = 1_000_000

#: Run inside the image: bytes installed by each distribution in the venv, except the installers.
INSTALLED_SIZE = """
import importlib.metadata as md, json, os
sizes = {}
for dist in md.distributions():
    name = dist.metadata["Name"].lower()
    if name in ("pip", "setuptools", "wheel"):
        continue
    total = 0
    for f in dist.files or ():
        path = dist.locate_file(f)
        if os.path.isfile(path):
            total += os.path.getsize(path)
    sizes[name] = total
print(json.dumps(sizes))
"""


def installed_size(engine: docker_engine.DockerSDKEngine, tag: str) -> int:
    """Bytes the serving packages (with their dependencies) occupy in the image's venv."""
    out = engine.client.containers.run(
        tag, ["python", "-c", INSTALLED_SIZE], remove=True, user="10001"
    )
    return sum(json.loads(out).values())


def ready_times(engine: docker_engine.Engine, tag: str, runs: int) -> list[float]:
    """Seconds from ``docker run`` to the first 200 from ``/readyz``, ``runs`` times."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        container = engine.start(smoke.smoke_container(tag, smoke.SMOKE_PORT))
        try:
            contract_checks.wait_until_ready(
                f"http://127.0.0.1:{container.host_port(smoke.SMOKE_PORT)}",
                interval=0.02,
                still_running=container.is_running,
            )
            times.append(time.monotonic() - started)
        finally:
            container.remove()
    return times


def edit_predict_cell(notebook: Path) -> None:
    """Change only the predict cell (a comment), as a data scientist tweaking it would."""
    nb = nbformat.read(notebook, as_version=4)
    cell = next(
        c
        for c in nb.cells
        if "predict" in c.get("metadata", {}).get("tags", [])
        or c.source.lstrip().startswith("# nb2prod: predict")
    )
    cell.source += "\n# benchmark: an edit to the predict cell\n"
    nbformat.write(nb, notebook)


def bench(example: str, workdir: Path, runs: int) -> dict[str, Any]:
    """All figures for one example notebook."""
    engine = docker_engine.connect()
    notebooks = workdir / "notebooks"
    if not notebooks.exists():
        shutil.copytree(REPO / "example_notebooks", notebooks)
    notebook = notebooks / f"{example}.ipynb"
    context = workdir / example
    pipeline.build(BuildOptions(notebook=notebook, output=context, docker=False, quiet=True))
    cold = image.build_image(context, engine=engine, quiet=True, no_cache=True)

    edit_predict_cell(notebook)
    pipeline.build(
        BuildOptions(notebook=notebook, output=context, docker=False, quiet=True, force=True)
    )
    warm = image.build_image(context, engine=engine, quiet=True)
    cached = image.cached_steps(warm.log_path.read_text())

    base = str(json.loads((context / ".nb2prod" / "image.json").read_text())["base_image"])
    info = engine.inspect_image(base)
    assert info is not None, f"the base image {base} is gone"
    base_size = info.size_bytes
    packages = installed_size(engine, warm.tags[0])
    ready = ready_times(engine, warm.tags[0], runs)
    return {
        "example": example,
        "image_mb": warm.size_bytes / MB,
        "base_mb": base_size / MB,
        "packages_mb": packages / MB,
        "size_ratio": warm.size_bytes / (base_size + packages),
        "cold_s": cold.seconds,
        "warm_s": warm.seconds,
        "build_ratio": cold.seconds / warm.seconds,
        "pip_layer_cached": any("RUN pip install" in step for step in cached),
        "venv_copy_cached": any("COPY --from=builder" in step for step in cached),
        "ready_median_s": statistics.median(ready),
        "ready_all_s": [round(t, 2) for t in ready],
    }


def deps_cached(row: dict[str, Any]) -> str:
    """'yes' when both the pip layer and the venv copy came from the cache."""
    if row["pip_layer_cached"] and row["venv_copy_cached"]:
        return "yes"
    return "pip only" if row["pip_layer_cached"] else "NO"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", default=",".join(EXAMPLES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nb2prod-image-bench-") as tmp:
        for example in args.examples.split(","):
            print(f"... {example}", file=sys.stderr, flush=True)
            rows.append(bench(example, Path(tmp), args.runs))
    header = (
        f"{'example':<22}{'image MB':>9}{'base MB':>9}{'pkgs MB':>9}{'ratio':>7}"
        f"{'cold s':>8}{'warm s':>8}{'cold/warm':>10}{'deps cached':>12}{'ready p50 s':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['example']:<22}{r['image_mb']:>9.1f}{r['base_mb']:>9.1f}{r['packages_mb']:>9.1f}"
            f"{r['size_ratio']:>7.3f}{r['cold_s']:>8.1f}{r['warm_s']:>8.1f}"
            f"{r['build_ratio']:>9.1f}x{deps_cached(r):>12}"
            f"{r['ready_median_s']:>12.2f}"
        )
    print("\nsize goal: ratio <= 1.10 (image / (base + installed packages)); ready goal: < 1.5 s")
    print("ready runs (s): " + "; ".join(f"{r['example']} {r['ready_all_s']}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["pip_layer_cached"] and r["venv_copy_cached"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
