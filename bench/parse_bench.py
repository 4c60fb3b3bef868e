"""Client CPU of indexing one Express session: parse and classify its value, build its index entry.

The plan's SCAN phase is CPU-bound on a small machine, and this is most of its client work. Sessions are
generated as the demo seeds them; the figure is the best of ``runs`` passes of CPU time (process_time).

    python bench/parse_bench.py [sessions] [runs]
"""

from __future__ import annotations

import json
import random
import sys
import time

from tokenmigration.demo_data import express_session
from tokenmigration.engine.session_index import _entry
from tokenmigration.formats.express import SessionDecoder


def main(sessions: int = 50_000, runs: int = 5) -> float:
    rng = random.Random(7)
    values = [json.dumps(express_session(rng, rng.randint(1, 100_000) if rng.random() < 0.95 else None)).encode()
              for _ in range(sessions)]
    sids = [f"{n:032x}" for n in range(sessions)]
    parse = SessionDecoder("passport.user").parse

    def one_pass() -> float:
        started = time.process_time()
        for sid, value in zip(sids, values, strict=True):
            parsed = parse(value)
            if parsed.user_id is not None:
                _entry(sid, parsed.user_id, parsed.ip_address, parsed.user_agent)
        return time.process_time() - started

    best = min(one_pass() for _ in range(runs))
    print(f"{best / sessions * 1e6:.2f} us of CPU per session (best of {runs} passes over {sessions:,} sessions)")
    return best


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
