"""What applications import: settings, workload clients, the local cache and the store."""
