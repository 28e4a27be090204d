"""What record/replay costs at serving: this nb2prod's service against an older nb2prod's.

Builds the same notebook with two nb2prod source trees (this checkout, and ``--old-src``, a
checkout from before record/replay, e.g. ``git worktree add /tmp/nb2prod-old f3aa0e1``). Each
build vendors its own runtime, so each service runs exactly the code its nb2prod generated.
Both run under uvicorn with the same flags, one at a time, driven by serve_bench's keep-alive
load generator with a one-row request, in alternating rounds. Prints requests/s and p50 per
build and the ratio new/old (medians over the rounds).

``--ten-sites`` benchmarks a generated notebook whose preprocessing has ten statistics over
the rows (``df[c].fillna(df[c].mean())`` for ten columns): the old service computes them on
each request's rows, the new one replays the training values.

    python benchmarks/replay_bench.py --old-src /tmp/nb2prod-old [--notebook NB | --ten-sites]
        [--seconds 4] [--rounds 5] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import load, start_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [f"f{i}" for i in range(10)]


def ten_sites_notebook(folder: Path) -> Path:
    """A notebook with ten row statistics in its preprocess cell, on generated data."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(400, 10)), columns=COLUMNS)
    frame = frame.mask(rng.random(frame.shape) < 0.1)
    frame["y"] = (frame["f0"].fillna(0) + frame["f1"].fillna(0) > 0).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "data.csv", index=False)
    cells = [
        ("import pandas as pd\nfrom sklearn.linear_model import LogisticRegression", []),
        ("df = pd.read_csv('data.csv')", ["load"]),
        (
            "\n".join(f"df['{c}'] = df['{c}'].fillna(df['{c}'].mean())" for c in COLUMNS)
            + f"\nX = df[{COLUMNS!r}]",
            ["preprocess"],
        ),
        ("model = LogisticRegression().fit(X, df['y'])", ["train"]),
        ("predictions = model.predict(X)", ["predict"]),
    ]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in cells]
    path = folder / "ten_sites.ipynb"
    nbformat.write(nb, path)
    return path


def build(source: Path, notebook: Path, out: Path) -> None:
    """``nb2prod build --no-docker`` with the nb2prod found in ``source``."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nb2prod",
            "build",
            str(notebook),
            "--no-docker",
            "-q",
            "-o",
            str(out),
        ],
        check=True,
        env=env,
        cwd=notebook.parent,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", required=True, help="a checkout of the older nb2prod")
    parser.add_argument("--notebook", default=str(ROOT / "example_notebooks/iris_function.ipynb"))
    parser.add_argument("--ten-sites", action="store_true")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nb2prod-replay-bench-"))
    notebook = ten_sites_notebook(work / "nb") if args.ten_sites else Path(args.notebook).resolve()
    builds = {"old": work / "old", "new": work / "new"}
    build(Path(args.old_src).resolve(), notebook, builds["old"])
    build(ROOT, notebook, builds["new"])
    golden = json.loads((builds["new"] / "model" / "golden.json").read_text())
    # A row without nulls: the old service computes statistics of the request's own rows, and
    # the mean of one missing value is missing.
    row = next(r for r in golden["rows"] if all(v is not None for v in r.values()))
    body = json.dumps({"instances": [row]}).encode()

    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_index in range(args.rounds):
        order = ["old", "new"] if round_index % 2 == 0 else ["new", "old"]
        for name in order:
            env = {**os.environ, "PYTHONPATH": str(builds[name])}
            process, port = start_server(builds[name], "serving", env)
            try:
                load(port, body, 1, 1.0)  # warm up
                for concurrency in args.concurrency:
                    results.setdefault((name, concurrency), []).append(
                        load(port, body, concurrency, args.seconds)
                    )
            finally:
                process.terminate()
                process.wait(timeout=15)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    def median(name: str, concurrency: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, concurrency)])

    what = "ten recorded statistics" if args.ten_sites else notebook.name
    print(f"notebook: {what}  rounds: {args.rounds} x {args.seconds:g}s, alternating (medians)")
    print(f"{'concurrency':>11} {'build':>6} {'req/s':>9} {'p50 ms':>8}")
    for concurrency in args.concurrency:
        for name in ("old", "new"):
            print(
                f"{concurrency:>11} {name:>6} {median(name, concurrency, 'rps'):>9.0f} "
                f"{median(name, concurrency, 'p50'):>8.2f}"
            )
    for concurrency in args.concurrency:
        ratio = median("new", concurrency, "rps") / median("old", concurrency, "rps")
        print(f"throughput ratio new/old, concurrency {concurrency}: {ratio:.3f}")


if __name__ == "__main__":
    main()
