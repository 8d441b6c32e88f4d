"""The dev laptop (or this machine): one host, @local, with sudo when not root."""

import os

dev = [("@local", {"_sudo": os.geteuid() != 0})]
