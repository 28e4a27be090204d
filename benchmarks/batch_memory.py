"""Batch scoring in bounded memory: a CSV several times larger than the container's memory.

Builds the example (or takes ``--build-dir``, built with Docker), writes a CSV of
``--gigabytes`` GB by repeating the build's golden rows, then runs the image's batch entry
point on it in a container capped at ``--memory`` (no swap):

    docker run --memory M --memory-swap M --read-only --tmpfs /tmp -v WORK:/data IMAGE \\
        python -m nb2prod_runtime.batch /data/big.csv -o /data/scored.csv

and prints the exit code, whether the kernel killed it for memory, the rows scored, the
container's peak memory (cgroup ``memory.max_usage_in_bytes``; on cgroup v1 that counts the
page cache of the files read and written, which the kernel reclaims under the cap, so it
reaches the cap without the process being short of memory) and the file size as a
multiple of the cap. Nothing here is a test: it takes minutes and gigabytes.

    python benchmarks/batch_memory.py [--build-dir DIR] [--gigabytes 4] [--memory 400m]
        [--chunk-rows 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = """
import subprocess, sys
code = subprocess.run([sys.executable, "-m", "nb2prod_runtime.batch", *sys.argv[1:]]).returncode
for name in ("memory.max_usage_in_bytes", "memory.peak"):
    for folder in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        try:
            print("peak-bytes", open(f"{folder}/{name}").read().strip(), file=sys.stderr)
            sys.exit(code)
        except OSError:
            pass
sys.exit(code)
"""


def _bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].lower()]) if text[-1].isalpha() else int(text)


def write_csv(build: Path, path: Path, gigabytes: float) -> int:
    """A CSV of about ``gigabytes`` GB: the golden rows (schema columns) over and over."""
    card = json.loads((build / "model" / "model_card.json").read_text())
    names = [column["name"] for column in card["input_schema"]["columns"]]
    rows = json.loads((build / "model" / "golden.json").read_text())["rows"]
    lines = [
        ",".join("" if row.get(n) is None else str(row.get(n)) for n in names)
        for row in rows
        if all(row.get(n) is not None for n in names)
    ]
    block = ("\n".join(lines) + "\n").encode()
    target = int(gigabytes * (1 << 30))
    count = 0
    with path.open("wb") as sink:
        sink.write((",".join(names) + "\n").encode())
        while sink.tell() < target:
            sink.write(block * 1000)
            count += len(lines) * 1000
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--notebook", default=str(ROOT / "example_notebooks/diabetes_regression.ipynb")
    )
    parser.add_argument("--build-dir", help="a directory built with Docker (skips the build)")
    parser.add_argument("--gigabytes", type=float, default=4.0)
    parser.add_argument("--memory", default="400m", help="the container's memory cap")
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nb2prod-batch-memory-"))
    build = Path(args.build_dir) if args.build_dir else work / "build"
    if not args.build_dir:
        command = [sys.executable, "-m", "nb2prod", "build", args.notebook, "-o", str(build)]
        subprocess.run([*command, "-q"], check=True)
    image = json.loads((build / ".nb2prod" / "image.json").read_text())["tags"][0]
    data = work / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's non-root user writes the output there
    rows = write_csv(build, data / "big.csv", args.gigabytes)
    size = (data / "big.csv").stat().st_size
    print(f"input: {size / (1 << 30):.2f} GiB, {rows:,} rows; image {image}", flush=True)
    name = f"nb2prod-batch-memory-{int(time.time())}"
    started = time.perf_counter()
    docker = ["docker", "run", "--name", name, "--memory", args.memory]
    docker += ["--memory-swap", args.memory, "--read-only", "--tmpfs", "/tmp"]
    docker += ["-v", f"{data}:/data", image, "python", "-c", RUNNER]
    docker += ["/data/big.csv", "-o", "/data/scored.csv", "--chunk-rows", str(args.chunk_rows)]
    result = subprocess.run([*docker, "--json", "-q"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.OOMKilled}}", name], capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["docker", "rm", name], capture_output=True)
    peak = next(
        (int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("peak")),
        None,
    )
    summary = json.loads(result.stdout) if result.returncode == 0 else {}
    cap = _bytes(args.memory)
    print(f"exit {result.returncode}, killed for memory: {state}, {seconds:.0f} s")
    if result.returncode != 0:
        print(result.stderr[-2000:])
    print(f"rows scored: {summary.get('rows_scored')}, rejected: {summary.get('rows_rejected')}")
    if peak:
        print(f"peak memory {peak / (1 << 20):.0f} MiB of a {cap / (1 << 20):.0f} MiB cap")
    print(f"file / cap: {size / cap:.1f}x")
    for leftover in data.iterdir():
        leftover.unlink()


if __name__ == "__main__":
    main()
