"""restic backups and restores of planned instances (README "Backups").

`settings` turns a plan into one instance's backup settings (the runner's root-only env
file), `host` runs root commands on a host (locally or over SSH), `restore` checks a
snapshot and swaps it in. The backup itself is the shell runner the deploy installs
(templates/valkey-plans-backup.sh): the timer and `valkey-plans backup` both start it.
"""
