"""Completion callbacks: POST a finished run to its ``callback_url`` (issue 6 implements).

The engine calls :func:`enqueue_run_callback` once, on commit, when a run with a callback URL ends.
"""

from __future__ import annotations


def enqueue_run_callback(run_id: int) -> None:
    """Schedule the callback POST for a finished run (a no-op until issue 6 lands)."""
