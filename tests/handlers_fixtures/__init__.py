"""Handler modules the handler and invoker tests load by name."""
