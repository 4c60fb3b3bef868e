"""Print the total line coverage and every module under the bar, from `coverage json` output.

Used by `make coverage`; exits 1 when a user-facing CLI module (tokenmigration/cli/) is under the bar, so the
target fails where people meet the code first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BAR = 85.0
GUARDED = "tokenmigration/cli/"


def main(path: str) -> int:
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    total = report["totals"]["percent_covered"]
    under = sorted((data["summary"]["percent_covered"], name) for name, data in report["files"].items()
                   if data["summary"]["percent_covered"] < BAR)
    print(f"total line coverage (tests and the subprocesses they start): {total:.1f} %")
    print(f"modules under {BAR:.0f} %: {len(under)}")
    for percent, name in under:
        print(f"  {percent:5.1f} %  {name}")
    guarded = [name for _, name in under if GUARDED in name]
    if guarded:
        print(f"user-facing CLI modules under {BAR:.0f} %: {', '.join(guarded)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "coverage.json"))
