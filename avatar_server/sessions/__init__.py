"""Session lifecycle: service, provisioning poller, timers (cap and other deadlines)."""
