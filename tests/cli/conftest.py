"""The CLI tests run against a real `uplodr serve` (the e2e folder's fixtures: one gateway
per module, and no worker or machine record may outlive a test)."""

from tests.e2e.conftest import gateway, no_worker_left_after_each_test

__all__ = ["gateway", "no_worker_left_after_each_test"]
