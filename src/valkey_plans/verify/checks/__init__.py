"""The testinfra checks `valkey-plans verify` runs, shipped with the package.

The repository's top-level `checks/` is a link to this directory, so
`pytest checks/ --hosts=local:// --plan-inventory=inventories/dev.py` runs them too.
"""
