"""Baseline (1), the original pattern done synchronously: the handler pushes to every device, one
after another, before it answers. Run as ``python -m bench.baselines.sync_bottle --port P --store
FILE`` with the CHINWAG_APNS_* variables set."""

from __future__ import annotations

from bench.baselines.original import ApnsConfig, push_to_devices, serve


def push_then_answer(config: ApnsConfig, tokens: list[str], sender: str) -> None:
    push_to_devices(config, tokens, sender)


if __name__ == "__main__":
    serve(push_then_answer, __doc__ or "")
