"""Baseline (2), the original pattern as it shipped: the handler starts a
``multiprocessing.Process`` that runs the same serial loop, and answers at once (a thread would
die with the uWSGI request process). Nothing records the pushes: if that process dies, they are
lost. Run as ``python -m bench.baselines.mp_bottle --port P --store FILE``."""

from __future__ import annotations

import multiprocessing

from bench.baselines.original import ApnsConfig, push_to_devices, serve


def push_in_background(config: ApnsConfig, tokens: list[str], sender: str) -> None:
    # The default start method on Linux (fork), as in the original.
    multiprocessing.Process(target=push_to_devices, args=(config, tokens, sender)).start()


if __name__ == "__main__":
    serve(push_in_background, __doc__ or "")
