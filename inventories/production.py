"""A small production site: one box that holds the primary and the local cache.

Replace the address with your server's; pyinfra connects over SSH as `ssh_user`.
"""

production = [("valkey-1.example.internal", {"ssh_user": "root"})]
