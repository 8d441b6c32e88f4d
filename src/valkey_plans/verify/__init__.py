"""After a rollout: the checks (package data under `checks/`), the pytest plugin that
turns their outcomes into one table (`report`), the keyspace audit and the canary.
"""
