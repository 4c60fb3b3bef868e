"""Run checkov on template.yaml and hold its findings against security/checkov-waivers.yaml.

Fails (exit 1) on a finding nobody waived, on a waiver without a reason, and on a waiver that matches no
finding any more. Usage: python tools/security_scan.py <checkov executable> [template] [waivers]
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def findings(checkov: str, template: Path) -> list[tuple[str, str, str]]:
    done = subprocess.run([checkov, "-f", str(template), "--framework", "cloudformation", "--quiet", "--compact",
                           "-o", "json"], capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: there are failed checks
        sys.exit(f"checkov failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    if any(r.get("summary", {}).get("parsing_errors") for r in reports):
        sys.exit("checkov could not parse the template")
    return [(f["check_id"], f["resource"], f["check_name"]) for r in reports
            for f in r.get("results", {}).get("failed_checks", [])]


def main(argv: list[str]) -> int:
    checkov = argv[1] if len(argv) > 1 else "checkov"
    template = Path(argv[2]) if len(argv) > 2 else ROOT / "template.yaml"
    waivers = yaml.safe_load((Path(argv[3]) if len(argv) > 3 else ROOT / "security" / "checkov-waivers.yaml")
                             .read_text())["waivers"]
    problems = [f"waiver {w.get('check')} has no reason" for w in waivers if not str(w.get("reason", "")).strip()]
    used: set[int] = set()
    unwaived = 0
    found = findings(checkov, template)
    for check, resource, name in found:
        matches = [i for i, w in enumerate(waivers)
                   if w["check"] == check and any(fnmatch.fnmatchcase(resource, p) for p in w["resources"])]
        if matches:
            used.update(matches)
        else:
            unwaived += 1
            problems.append(f"{check} {resource}: {name} (fix it, or waive it with a reason)")
    problems += [f"waiver {w['check']} {w['resources']} matches no finding: remove it"
                 for i, w in enumerate(waivers) if i not in used]
    print(f"checkov: {len(found)} findings, {len(found) - unwaived} waived by {len(used)} waivers")
    for problem in problems:
        print("  " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
