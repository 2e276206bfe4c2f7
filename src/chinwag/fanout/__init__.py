"""The fan-out engine: outbox → deliveries → senders, durable and lease-based."""

from chinwag.fanout.deliveries import RetryPolicy
from chinwag.fanout.doorbell import BackgroundRinger, Doorbell
from chinwag.fanout.worker import Worker, WorkerOptions

__all__ = ["BackgroundRinger", "Doorbell", "RetryPolicy", "Worker", "WorkerOptions"]
