"""Shared bottom layer: errors, AWS clients and their retries, telemetry primitives, logging."""
