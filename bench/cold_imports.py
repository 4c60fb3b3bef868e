"""Cold import time of every Lambda handler against the floor ``import boto3, aws_lambda_powertools.event_handler``.

Each measurement is a fresh interpreter (as a Lambda cold start is) that puts the function's folder and the
layer on sys.path, sets the environment template.yaml gives the functions (Tracing Active, so the Tracer is
on), and times ``import app``; the figure is the median of ``--runs`` interpreters. The goal (issue 10): each
handler at most 1.5x the floor.

    .venv/bin/python bench/cold_imports.py [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
LAYER = ROOT / "layers" / "common"
GOAL = 1.5

ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "tokenmigration", "POWERTOOLS_METRICS_NAMESPACE": "TokenMigration",
    "TABLE_NAME": "t", "FLAGS_PATH": "/tokenmigration/dev/", "CHUNKS_BUCKET": "b",
    "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
    "MIGRATION_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
    "ROLLBACK_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:r",
    "AWS_LAMBDA_FUNCTION_NAME": "bench",  # Powertools decides some things (tracing) on being in Lambda
    "POWERTOOLS_TRACE_DISABLED": "true",  # the template's default (DisableXRaySdk)
}

TIMER = """
import sys, time
sys.path[:0] = {paths!r}
t = time.perf_counter()
{statement}
print(time.perf_counter() - t)
"""


def measure(statement: str, paths: list[str], runs: int) -> float:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}, **ENV}
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", TIMER.format(paths=paths, statement=statement)], env=env,
                              capture_output=True, text=True, check=True, cwd=paths[0] if paths else ROOT)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    floor = measure("import boto3, aws_lambda_powertools.event_handler", [str(LAYER)], args.runs)
    rows = []
    for folder in sorted(p for p in FUNCTIONS.iterdir() if (p / "app.py").is_file()):
        seconds = measure("import app", [str(folder), str(LAYER)], args.runs)
        rows.append({"handler": folder.name, "seconds": round(seconds, 4), "ratio": round(seconds / floor, 2)})
    worst = max(r["ratio"] for r in rows)
    if args.json:
        print(json.dumps({"floor_seconds": round(floor, 4), "goal_ratio": GOAL, "handlers": rows}, indent=2))
    else:
        print(f"floor (import boto3, aws_lambda_powertools.event_handler): {floor * 1000:.0f} ms, "
              f"median of {args.runs}")
        for row in rows:
            mark = "" if row["ratio"] <= GOAL else "  over the goal"
            print(f"  {row['handler']:<20} {row['seconds'] * 1000:7.0f} ms  {row['ratio']:5.2f}x{mark}")
        print(f"worst: {worst:.2f}x the floor (goal: at most {GOAL}x)")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
