"""`make bench`: run every bench/bench_*.py module and write bench/results/latest.json.

Each module defines ``run(results: dict[str, float]) -> None`` and adds flat keys such as
``engine.sqlite.node_overhead_ms_p50``. Figures are measured in one process run so ratios compare
like with like on a noisy machine.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> int:
    only = set(sys.argv[1:])
    results: dict[str, float] = {}
    modules = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))
    for name in modules:
        if only and name not in only:
            continue
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.run(results)
        print(f"   ({time.perf_counter() - started:.1f}s)", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    width = max((len(k) for k in results), default=0)
    for key, value in sorted(results.items()):
        print(f"{key:<{width}}  {value:.3f}")
    print(f"wrote {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
