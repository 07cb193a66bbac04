"""Benchmark: the quick `risk` commands of one checkout against another, on the same built project.

The commands a user runs often and expects to answer at once: the rerun with nothing missing
(``risk build``), ``risk status``, ``risk lineage``, and a build refused for a bad parameters file.
Each is timed as a whole process (interpreter start included), alternating the two checkouts
``--rounds`` times so that both see the same machine; the table gives each one's median and the
ratio of the second checkout to the first (the baseline).

The project must be built already (``make demo`` in it, or ``risk build --home HOME``), by code
with the same build keys as both checkouts (the same ``MODEL_CODE_VERSION``), so that the rerun
has nothing to do for either.

Usage::

    .venv/bin/python benchmarks/bench_cli_startup.py --home /tmp/fresh --baseline ../before --candidate . [--rounds 5]

With ``--baseline-home`` (a copy of the project) each checkout reruns in its own folder: needed when
the two write different record stamps (``risk_assets/record_stamp.py``), each voiding the other's.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "`risk build`, nothing missing": ["build"],
    "`risk status`": ["status"],
    "`risk lineage` (newest release)": ["lineage"],
    "`risk build` refused: bad parameters file": ["build"],
}
BAD_PARAMS = "blur_sigma_m: -120\n"


def run(checkout: Path, home: Path, name: str, bad_params: Path) -> float:
    """Seconds of one ``risk`` process of ``checkout`` (from a neutral folder, so that the
    checkout on ``PYTHONPATH`` is the one imported)."""
    env = os.environ | {"PYTHONPATH": str(checkout), "DAGSTER_HOME": str(home), "RISK_HOME": str(home)}
    refused = "refused" in name
    if refused:
        env["RISK_PARAMS"] = str(bad_params)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "risk_assets.cli", "--home", str(home), *COMMANDS[name]],
        cwd=bad_params.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    expected = 1 if refused else 0
    if done.returncode != expected:
        raise SystemExit(f"{checkout}: {name} exited {done.returncode}: {done.stdout}{done.stderr}")
    if name.endswith("nothing missing") and "commits made: 0" not in done.stdout:
        raise SystemExit(f"{checkout}: the rerun had something to do: {done.stdout}")
    return elapsed


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True, help="a built project folder")
    parser.add_argument("--baseline", type=Path, required=True, help="checkout measured first (ratio 1.00)")
    parser.add_argument("--candidate", type=Path, required=True, help="checkout compared with it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline-home",
        type=Path,
        default=None,
        help="a copy of --home for the baseline (checkouts whose record stamps differ would void each other's)",
    )
    args = parser.parse_args()
    checkouts = (args.baseline.resolve(), args.candidate.resolve())
    homes = {checkouts[0]: (args.baseline_home or args.home).resolve(), checkouts[1]: args.home.resolve()}
    times: dict[tuple[str, Path], list[float]] = {(n, c): [] for n in COMMANDS for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        bad_params = Path(tmp) / "params.yaml"
        bad_params.write_text(BAD_PARAMS)
        for _ in range(args.rounds):
            for name in COMMANDS:
                for checkout in checkouts:
                    times[(name, checkout)].append(run(checkout, homes[checkout], name, bad_params))
    base, cand = checkouts
    print(f"| command ({args.rounds} rounds, medians) | {base.name} (baseline), s | {cand.name}, s | ratio |")
    print("|---|---|---|---|")
    for name in COMMANDS:
        b, c = statistics.median(times[(name, base)]), statistics.median(times[(name, cand)])
        print(f"| {name} | {b:.2f} | {c:.2f} | {c / b:.2f} |")


if __name__ == "__main__":
    main()
