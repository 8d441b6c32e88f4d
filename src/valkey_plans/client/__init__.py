"""What applications import: settings, workload clients, the local cache and the store.

    from valkey_plans.client.settings import load_settings
    from valkey_plans.client.clients import Clients
    from valkey_plans.client.cache import LocalCache

The base distribution (`pip install valkey-plans`) is this package, the key codec and
the domain registry: nothing here imports the plan, the deploy, the checks or the lab,
so an application never loads pyinfra, jinja2 or pytest (tests/unit/test_packaging.py
holds it to that).
"""
