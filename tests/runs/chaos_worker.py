"""A real q-cluster for the fault test: Django set up, the test node types registered, then qcluster.

Run as a script (``python tests/runs/chaos_worker.py``); the test kills it with SIGKILL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

if __name__ == "__main__":
    import django

    django.setup()
    from django.core.management import call_command

    from tests.runs.nodes import register_test_nodes

    register_test_nodes()  # forked workers inherit the registry
    call_command("qcluster")
