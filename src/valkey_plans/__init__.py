"""valkey-plans: one written plan for Valkey, deployed by pyinfra and verified by testinfra."""

__version__ = "0.1.0"
