"""Local providers that speak the real protocols (APNs, FCM v1, Web Push, SMTP, webhooks) over
TLS, strictly, with latency and fault knobs: for the tests, the benchmarks and the demo.
``chinwag fakes`` runs them all; ``chinwag.fakes.suite`` is the programmatic entry point."""
