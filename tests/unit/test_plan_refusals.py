"""Bad plans written in a hurry: each is refused before pyinfra's first operation.

One table, one row per mistake. Every row must come back as one line naming the host,
the field (as the user wrote it), the value and what is allowed; and the packaged
deploy, run by pyinfra's own API, must raise before it adds a single operation.
"""

from __future__ import annotations

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.context import ctx_inventory

from valkey_plans.deploy import valkey_plan
from valkey_plans.plan import Plan, PlanError, topology

HOST = "web-1"
ACL = {"valkey_acl": True}


def cache(**over):
    return {"name": "cache", "role": "cache", "port": 6379, **over}


def primary(**over):
    return {"name": "main", "role": "primary", "port": 6380, **over}


def node(port: int, **over):
    return {
        "name": f"n{port}",
        "role": "cluster-node",
        "port": port,
        "cluster": "c",
        "bind": ["10.0.0.1"],
        **over,
    }


def instances(*entries, **data):
    return {"valkey_instances": list(entries), **data}


def app(**over):
    return {"valkey_app": over}


def hosted(**over):
    """An external hosted tier, TLS with one user, as a managed service hands it out."""
    return {"url": "valkeys://db.example.com:6380", "login": "user", "user": "app", **over}


def exporter(**over):
    return {"valkey_exporter": over}


def backup(**over):
    return {"valkey_backup": {"enabled": True, **over}}


TLS = {"port": 6390, "cert_file": "/etc/ssl/v.crt", "key_file": "/etc/ssl/v.key"}
TLS["ca_cert_file"] = "/etc/ssl/ca.crt"
SENTINEL = {"primary": "db-1/main", "bind": ["127.0.0.1"]}
ADOPT = {"from": "redis"}

#: (id, host data, substrings the one error line must hold).
BAD_PLANS = [
    # -- ports: strict integers in range, one owner per port -----------------------------
    ("port-bool", instances(cache(port=True)), ["[cache].port = True", "allowed: an integer"]),
    ("port-str", instances(cache(port="6379")), ["[cache].port = '6379'", "allowed: an integer"]),
    ("port-float", instances(cache(port=6379.0)), ["[cache].port = 6379.0", "allowed"]),
    ("port-zero", instances(cache(port=0)), ["[cache].port = 0", "allowed: a TCP port"]),
    ("port-high", instances(cache(port=70000)), ["[cache].port = 70000", "1 to 65535"]),
    ("port-twice", instances(cache(), primary(port=6379)), ["port 6379", "allowed: one"]),
    (
        "tls-port-clash",
        instances(cache(tls={**TLS, "port": 6380}), primary()),
        ["port 6380", "allowed: one instance per port"],
    ),
    (
        "bus-port-above-65535",
        instances(node(60000), **ACL),
        ["[n60000]: cluster bus port 70000", "allowed: a cluster-node port up to 55535"],
    ),
    (
        "bus-port-clash",
        instances(node(6379), cache(name="other", port=16379), **ACL),
        ["port 16379", "cluster bus", "allowed: one instance per port"],
    ),
    (
        "sentinel-on-instance-port",
        {**instances(cache(port=26379)), "valkey_sentinel": SENTINEL},
        ["sentinel port 26379", "allowed: one instance per port"],
    ),
    # -- names: full match, so no trailing newline sneaks through ------------------------
    ("name-upper", instances(cache(name="Cache")), ["[0].name = 'Cache'", "allowed"]),
    ("name-newline", instances(cache(name="cache\n")), ["name = 'cache\\n'", "allowed"]),
    ("name-space", instances(cache(name="ca che")), ["name = 'ca che'", "allowed"]),
    ("name-traversal", instances(cache(name="../x")), ["name = '../x'", "allowed"]),
    ("name-twice", instances(cache(), cache(port=6380)), ["name 'cache'", "allowed: one"]),
    ("role", instances(cache(role="master")), ["role = 'master'", "allowed: one of"]),
    # -- addresses: parsed as IP addresses, scope ids name one interface ------------------
    (
        "bind-all-without-acl",
        instances(cache(bind=["0.0.0.0"])),
        ["bind beyond loopback without passwords", "allowed: loopback only"],
    ),
    ("bind-hostname", instances(cache(bind=["localhost"])), ["'localhost' is not an IP"]),
    (
        "bind-scope-smuggles-address",
        instances(cache(bind=["::1%1 0.0.0.0"])),
        ["[cache].bind", "'::1%1 0.0.0.0'", "allowed"],
    ),
    (
        "bind-newline",
        instances(cache(bind=["127.0.0.1\nprotected-mode no"])),
        ["[cache].bind", "is not an IP address", "allowed"],
    ),
    ("bind-empty", instances(cache(bind=[])), ["[cache].bind = []", "allowed: at least one"]),
    ("bind-str", instances(cache(bind="127.0.0.1")), ["bind = '127.0.0.1'", "allowed: a list"]),
    (
        "bind-twice",
        instances(cache(bind=["127.0.0.1", "127.0.0.1"])),
        ["[cache].bind", "allowed: each address once"],
    ),
    (
        "announce-hostname",
        instances(cache(announce_ip="example.com")),
        ["announce_ip = 'example.com'", "allowed: one IP address"],
    ),
    (
        "announce-newline",
        instances(cache(announce_ip="10.0.0.1\nbind 0.0.0.0")),
        ["announce_ip", "allowed"],
    ),
    # -- memory, persistence, logging ----------------------------------------------------
    ("maxmemory-words", instances(cache(maxmemory="lots")), ["maxmemory = 'lots'", "allowed"]),
    ("maxmemory-newline", instances(cache(maxmemory="256mb\n")), ["maxmemory = '256mb\\n'"]),
    ("maxmemory-bool", instances(cache(maxmemory=True)), ["maxmemory = True", "allowed"]),
    ("maxmemory-float", instances(cache(maxmemory=1.5)), ["maxmemory = 1.5", "allowed"]),
    ("policy", instances(cache(maxmemory_policy="lru")), ["maxmemory-policy = 'lru'", "one of"]),
    ("samples-zero", instances(cache(maxmemory_samples=0)), ["maxmemory-samples = 0", "1 to 64"]),
    ("samples-str", instances(cache(maxmemory_samples="5")), ["maxmemory-samples = '5'"]),
    ("cache-dbs", instances(cache(databases=2)), ["databases = 2", "allowed: 4 to 16"]),
    ("databases-bool", instances(cache(databases=True)), ["databases = True", "an integer"]),
    ("primary-dbs", instances(primary(databases=4)), ["databases = 4", "allowed: 1"]),
    ("save-one-number", instances(cache(save=["3600"])), ["'3600' is not a save rule"]),
    (
        "save-newline",
        instances(cache(save=["3600 1\nsave 1 1"])),
        ["is not a save rule", "allowed: 'SECONDS CHANGES'"],
    ),
    ("save-negative", instances(cache(save=["-1 5"])), ["'-1 5' is not a save rule"]),
    ("appendonly-str", instances(cache(appendonly="yes")), ["appendonly = 'yes'", "true or false"]),
    ("appendonly-int", instances(cache(appendonly=1)), ["appendonly = 1", "true or false"]),
    ("appendfsync", instances(cache(appendfsync="sometimes")), ["appendfsync = 'sometimes'"]),
    ("loglevel", instances(cache(loglevel="loud")), ["loglevel = 'loud'", "allowed: one of"]),
    # -- extra_config: never a directive the deploy manages or relies on ----------------
    *[
        (
            f"extra-{key}",
            instances(cache(extra_config={key: value})),
            [f"extra_config['{key}'] is managed by the deploy", hint, "allowed"],
        )
        for key, value, hint in [
            ("bind", "0.0.0.0", "`bind` field"),
            ("protected-mode", "no", "valkey_acl"),
            ("dir", "/tmp", "hardened unit"),
            ("dbfilename", "x.rdb", "RDB file"),
            ("port", "1", "`port` field"),
            ("unixsocket", "/tmp/x.sock", "unix socket"),
            ("aclfile", "/tmp/a.acl", "valkey_acl"),
            ("include", "/etc/passwd", "bypass"),
            ("loadmodule", "/tmp/evil.so", "arbitrary code"),
            ("enable-debug-command", "yes", "DEBUG"),
            ("rename-command", "FLUSHALL x", "names"),
            ("logfile", "/nonexistent/x.log", "log file"),
            ("replicaof", "10.0.0.9 6379", "role replica"),
            ("cluster-enabled", "yes", "role cluster-node"),
            ("requirepass", "hunter2hunter2", "secrets"),
            ("maxmemory", "1gb", "`maxmemory` field"),
            ("save", "1 1", "`save` field"),
            ("tls-cert-file", "/etc/ssl/x.pem", "`tls`"),
        ]
    ],
    (
        "extra-value-newline",
        instances(cache(extra_config={"hz": "10\nprotected-mode no"})),
        ["extra_config['hz']", "allowed: one line"],
    ),
    (
        "extra-value-quotes",
        instances(cache(extra_config={"notify-keyspace-events": '"Ex"'})),
        ["extra_config['notify-keyspace-events']", "without quotes"],
    ),
    (
        "extra-name",
        instances(cache(extra_config={"Hz": "10"})),
        ["extra_config['Hz']", "allowed: a Valkey directive name"],
    ),
    (
        "extra-value-bool",
        instances(cache(extra_config={"hz": True})),
        ["extra_config.hz", "True", "allowed"],
    ),
    # -- TLS: absolute normalised paths, strict types ---------------------------------------
    ("tls-relative", instances(cache(tls={**TLS, "cert_file": "v.crt"})), ["cert_file = 'v.crt'"]),
    (
        "tls-space",
        instances(cache(tls={**TLS, "key_file": "/etc/ssl/a b.key"})),
        ["tls.key_file = '/etc/ssl/a b.key'", "allowed: an absolute, normalised path"],
    ),
    (
        "tls-traversal",
        instances(cache(tls={**TLS, "ca_cert_file": "/etc/ssl/../shadow"})),
        ["tls.ca_cert_file = '/etc/ssl/../shadow'", "allowed"],
    ),
    ("tls-port-range", instances(cache(tls={**TLS, "port": 70000})), ["tls.port = 70000"]),
    (
        "tls-auth",
        instances(cache(tls={**TLS, "auth_clients": "maybe"})),
        ["tls.auth_clients = 'maybe'", "allowed: one of"],
    ),
    ("tls-only-str", instances(cache(tls={**TLS, "only": "yes"})), ["tls.only = 'yes'"]),
    # -- scale-out names and references --------------------------------------------------
    (
        "replicaof-no-host",
        instances({"name": "r", "role": "replica", "port": 6381, "replicaof": "main"}, **ACL),
        ["replicaof = 'main'", "allowed: 'INVENTORY_HOST/INSTANCE'"],
    ),
    (
        "replicaof-space",
        instances({"name": "r", "role": "replica", "port": 6381, "replicaof": "db 1/main"}),
        ["replicaof = 'db 1/main'", "allowed"],
    ),
    ("cluster-name", instances(node(7000, cluster="Main"), **ACL), ["cluster = 'Main'", "allowed"]),
    (
        "cluster-timeout-str",
        instances(node(7000, cluster_node_timeout="5000"), **ACL),
        ["cluster_node_timeout = '5000'", "an integer"],
    ),
    ("instance-unknown-key", instances(cache(colour="blue")), ["colour = 'blue'", "unknown"]),
    (
        "cache-cap-zero",
        instances(cache(cache_dbs={"user_cache": {"db": 1, "cap": 0}})),
        ["cache_dbs.user_cache.cap = 0", "allowed: greater than or equal to 1"],
    ),
    (
        "cache-ttl-str",
        instances(cache(cache_dbs={"user_cache": {"db": 1, "ttl": "3600"}})),
        ["cache_dbs.user_cache.ttl = '3600'", "an integer"],
    ),
    (
        "cache-ttl-huge",
        instances(cache(cache_dbs={"user_cache": {"db": 1, "ttl": 10**12}})),
        ["cache_dbs.user_cache.ttl = 1000000000000", "allowed: less than or equal to"],
    ),
    # -- application settings: a directory the deploy may own, a POSIX group --------------
    ("env-dir-root", app(env_dir="/"), ["valkey_app.env_dir = '/'", "allowed"]),
    ("env-dir-etc", app(env_dir="/etc"), ["env_dir = '/etc'", "system directory", "allowed"]),
    ("env-dir-usr-lib", app(env_dir="/usr/lib"), ["env_dir = '/usr/lib'", "allowed"]),
    ("env-dir-relative", app(env_dir="etc/vp"), ["env_dir = 'etc/vp'", "allowed: an absolute"]),
    (
        "env-dir-traversal",
        app(env_dir="/etc/valkey-plans/../ssh"),
        ["env_dir = '/etc/valkey-plans/../ssh'", "normalised"],
    ),
    ("env-dir-home", app(env_dir="/home/ada"), ["env_dir = '/home/ada'", "home directory"]),
    ("env-dir-proc", app(env_dir="/proc/self"), ["env_dir = '/proc/self'", "system directory"]),
    ("group-injection", app(group="x;touch /tmp/pwned"), ["group = 'x;touch /tmp/pwned'"]),
    ("group-space", app(group="domain users"), ["group = 'domain users'", "no spaces"]),
    ("group-dash", app(group="-rf"), ["group = '-rf'", "allowed: a portable POSIX name"]),
    ("group-empty", app(group=""), ["group = ''", "allowed: a portable POSIX name"]),
    ("group-digits", app(group="1000"), ["group = '1000'", "allowed"]),
    ("app-name", app(name="App"), ["valkey_app.name = 'App'", "allowed"]),
    (
        "hosted-url-password",
        app(hosted_url="valkey://api:hunter2@db.example.com:6379"),
        ["hosted_url", "allowed: valkey://HOST:PORT", "no user or password"],
    ),
    ("hosted-url-db", app(hosted_url="valkey://db.example.com:6379/3"), ["no /DB: db 0 only"]),
    ("hosted-url-db0", app(hosted_url="valkey://db.example.com:6379/0"), ["hosted_url", "/DB"]),
    ("hosted-url-port", app(hosted_url="valkeys://db.example.com:70000"), ["port out of range"]),
    ("hosted-url-scheme", app(hosted_url="redis://db.example.com:6379"), ["valkeys://HOST"]),
    ("hosted-url-no-port", app(hosted_url="valkey://db.example.com"), ["hosted_url", "allowed"]),
    ("hosted-url-query", app(hosted_url="valkey://db:6379?db=1"), ["no query"]),
    ("hosted-url-newline", app(hosted_url="valkey://db:6379\nX=1"), ["hosted_url", "allowed"]),
    ("app-unknown-key", app(hosted_uri="db"), ["valkey_app.hosted_uri = 'db'", "unknown setting"]),
    # -- an external hosted tier: endpoint, mode, TLS and login, checked together ----------
    ("hosted-str", app(hosted="db"), ["valkey_app.hosted = 'db'", "allowed: a mapping"]),
    ("hosted-no-url", app(hosted={"login": "token"}), ["valkey_app.hosted.url", "allowed"]),
    (
        "hosted-url-credentials",
        app(hosted=hosted(url="valkeys://u:p@db.example.com:6380")),
        ["hosted.url = 'valkeys://u:p@db.example.com:6380'", "no user or password"],
    ),
    ("hosted-mode", app(hosted=hosted(mode="sentinel")), ["hosted.mode = 'sentinel'", "one of"]),
    (
        "hosted-seeds-standalone",
        app(hosted=hosted(seeds=["db-2.example.com:6380"])),
        ["valkey_app.hosted: seeds = ['db-2.example.com:6380']", "allowed: mode 'cluster'"],
    ),
    (
        "hosted-seed-no-port",
        app(hosted=hosted(mode="cluster", seeds=["db-2.example.com"])),
        ["hosted.seeds = ['db-2.example.com']", "allowed: 'HOST:PORT'"],
    ),
    (
        "hosted-seed-twice",
        app(hosted=hosted(mode="cluster", seeds=["a.example.com:1", "a.example.com:1"])),
        ["hosted.seeds", "allowed: each 'HOST:PORT' once"],
    ),
    (
        "hosted-ca-missing",
        app(hosted=hosted(tls_ca_file="/nonexistent/ca.pem")),
        ["hosted.tls_ca_file = '/nonexistent/ca.pem'", "allowed: 'system' or a readable PEM"],
    ),
    (
        "hosted-ca-not-pem",
        app(hosted=hosted(tls_ca_file="/etc/hostname")),
        ["hosted.tls_ca_file = '/etc/hostname'", "holds no PEM certificate"],
    ),
    (
        "hosted-ca-relative",
        app(hosted=hosted(tls_ca_file="ca.pem")),
        ["hosted.tls_ca_file = 'ca.pem'", "allowed: an absolute"],
    ),
    (
        "hosted-ca-without-tls",
        app(hosted=hosted(url="valkey://db.example.com:6380", tls_server_name="db.example.com")),
        ["tls_server_name = 'db.example.com' with url", "allowed: a valkeys:// url"],
    ),
    (
        "hosted-server-name",
        app(hosted=hosted(tls_server_name="db example")),
        ["hosted.tls_server_name = 'db example'", "allowed: a DNS host name"],
    ),
    ("hosted-login", app(hosted=hosted(login="password")), ["hosted.login = 'password'", "one of"]),
    (
        "hosted-user-missing",
        app(hosted=hosted(user=None)),
        ["valkey_app.hosted: user = None with login = 'user'", "allowed: login 'user' with"],
    ),
    (
        "hosted-user-with-token",
        app(hosted=hosted(login="token")),
        ["user = 'app' with login = 'token'", "allowed"],
    ),
    (
        "hosted-user-space",
        app(hosted=hosted(user="my app")),
        ["hosted.user = 'my app'", "allowed: 1 to 128 of letters"],
    ),
    (
        "hosted-users-workload",
        app(hosted=hosted(login="per-workload", user=None, users={"web": "web"})),
        ["hosted.users.web", "allowed: one of"],
    ),
    (
        "hosted-and-url",
        app(hosted=hosted(), hosted_url="valkeys://db.example.com:6380"),
        ["valkey_app: hosted_url and hosted each name the hosted tier", "allowed: one of"],
    ),
    (
        "hosted-unknown-key",
        app(hosted=hosted(password="hunter2")),
        ["valkey_app.hosted.password = 'hunter2'", "unknown setting"],
    ),
    ("app-cache-ref", app(cache_instance="nope"), ["cache_instance = 'nope'", "allowed: one of"]),
    # -- adopt: a running Redis taken over, only when the plan says so -------------------
    ("adopt-from", instances(cache(adopt={"from": "memcached"})), ["adopt.from = 'memcached'"]),
    ("adopt-str", instances(cache(adopt="redis")), ["[cache].adopt = 'redis'", "a mapping"]),
    ("adopt-port-str", instances(cache(adopt=ADOPT | {"port": "6379"})), ["port = '6379'"]),
    ("adopt-typo", instances(cache(adopt=ADOPT | {"pasword_secret": "r"})), ["unknown setting"]),
    (
        "adopt-replica",
        instances(primary(role="replica", replicaof="db-1/main", bind=["10.0.0.2"], adopt=ADOPT)),
        ["[main].adopt: a replica cannot adopt", "allowed: adopt on role cache or primary"],
    ),
    (
        "adopt-port-of-another",
        instances(cache(adopt=ADOPT | {"port": 6380}), primary()),
        ["[cache].adopt.port = 6380: main is planned there", "allowed: Redis's port"],
    ),
    (
        "adopt-spare-taken",
        instances(cache(adopt=ADOPT | {"spare_port": 6380}), primary()),
        ["[cache].adopt.spare_port = 6380: taken (main)", "allowed: a free port"],
    ),
    (
        "adopt-spare-high",
        instances(cache(port=60000, adopt=ADOPT)),
        ["adopt.spare_port = 70000: above 65535", "allowed"],
    ),
    (
        "adopt-spare-is-redis",
        instances(cache(adopt=ADOPT | {"port": 6390, "spare_port": 6390})),
        ["adopt.spare_port = 6390: taken (Redis)", "allowed"],
    ),
    (
        "adopt-user-without-password",
        instances(cache(adopt=ADOPT | {"user": "mover"})),
        ["adopt.user = 'mover': a Redis ACL user needs its password", "password_secret"],
    ),
    ("adopt-secret-name", instances(cache(adopt=ADOPT | {"password_secret": "a b"})), ["a b"]),
    # -- top-level settings: typos are refused with the closest name ----------------------
    ("typo-instances", {"valkey_instance": [cache()]}, ["did you mean valkey_instances?"]),
    ("typo-acl", {"valkey_acls": True}, ["valkey_acls: unknown setting", "valkey_acl?"]),
    ("typo-far", {"valkey_colour": "blue"}, ["valkey_colour: unknown setting", "allowed:"]),
    ("acl-str", {"valkey_acl": "true"}, ["valkey_acl = 'true'", "allowed: true or false"]),
    ("acl-int", {"valkey_acl": 1}, ["valkey_acl = 1", "allowed: true or false"]),
    ("domain-newline", {"valkey_domains": ["usr\n"]}, ["'usr\\n': allowed: exactly 3"]),
    (
        "custom-domain-text",
        {"valkey_custom_domains": {"inv": "bills\nmore"}},
        ["valkey_custom_domains", "allowed: one line"],
    ),
    (
        "mirror-newline",
        {"valkey_debian_mirror": "http://deb.debian.org/debian main\ndeb http://x.example"},
        ["valkey_debian_mirror", "allowed: an http:// or https:// URL"],
    ),
    ("mirror-scheme", {"valkey_debian_mirror": "ftp://x.example/debian"}, ["https:// URL"]),
    ("secrets-relative", {"valkey_secrets_file": "secrets.json"}, ["secrets_file = 'secrets.j"]),
    (
        "secrets-traversal",
        {"valkey_secrets_file": "/home/a/../b.json"},
        ["valkey_secrets_file = '/home/a/../b.json'", "allowed: an absolute, normalised"],
    ),
    ("apt-time-str", {"valkey_apt_cache_time": "86400"}, ["apt_cache_time = '86400'", "integer"]),
    ("apt-time-negative", {"valkey_apt_cache_time": -1}, ["valkey_apt_cache_time = -1"]),
    ("replicas-bool", {"valkey_cluster_replicas": True}, ["valkey_cluster_replicas = True"]),
    (
        "sentinel-primary",
        {"valkey_sentinel": {**SENTINEL, "primary": "a b/c"}},
        ["valkey_sentinel.primary = 'a b/c'", "allowed"],
    ),
    (
        "sentinel-name",
        {"valkey_sentinel": {**SENTINEL, "name": "Main\n"}},
        ["valkey_sentinel.name = 'Main\\n'", "allowed"],
    ),
    (
        "sentinel-scope",
        {"valkey_sentinel": {**SENTINEL, "bind": ["fe80::1%eth0 0.0.0.0"]}},
        ["valkey_sentinel.bind", "scope id", "allowed"],
    ),
    ("sentinel-quorum", {"valkey_sentinel": {**SENTINEL, "quorum": "2"}}, ["quorum = '2'"]),
    # -- the exporter: strict types, one address, ports of its own, plain key globs -------
    ("exporter-enabled-str", exporter(enabled="yes"), ["enabled = 'yes'", "true or false"]),
    ("exporter-listen-host", exporter(listen="localhost"), ["listen = 'localhost'", "IP"]),
    ("exporter-listen-two", exporter(listen="127.0.0.1 ::1"), ["listen = '127.0.0.1 ::1'"]),
    ("exporter-listen-list", exporter(listen=["127.0.0.1"]), ["listen", "a string"]),
    ("exporter-offset-str", exporter(port_offset="3000"), ["port_offset = '3000'", "integer"]),
    ("exporter-offset-zero", exporter(port_offset=0), ["port_offset = 0", "allowed"]),
    (
        "exporter-offset-too-far",
        exporter(port_offset=60000),
        ["valkey_exporter.port_offset = 60000", "66379", "at most 65535"],
    ),
    (
        "exporter-port-clash",
        {**instances(cache(), primary()), **exporter(port_offset=1)},
        ["valkey_exporter.port_offset = 1", "exporter of cache (port 6380) clashes with main"],
    ),
    (
        "exporter-port-clash-sentinel",
        {"valkey_sentinel": {**SENTINEL, "port": 9379}},
        ["port_offset = 3000", "clashes with sentinel"],
    ),
    (
        "exporter-pattern-comma",
        exporter(key_patterns=["usr:*,ses:*"]),
        ["key_patterns = ['usr:*,ses:*']", "allowed: a key glob"],
    ),
    ("exporter-pattern-space", exporter(key_patterns=["usr *"]), ["key_patterns", "key glob"]),
    ("exporter-pattern-quote", exporter(key_patterns=["usr'*"]), ["key_patterns", "key glob"]),
    ("exporter-pattern-db16", exporter(key_patterns=["db16=usr:*"]), ["'db16=usr:*'", "0..15"]),
    ("exporter-pattern-twice", exporter(key_patterns=["vp:*", "vp:*"]), ["each pattern once"]),
    ("exporter-pattern-str", exporter(key_patterns="usr:*"), ["key_patterns", "a list"]),
    ("exporter-unknown", exporter(port=9121), ["valkey_exporter.port", "unknown setting"]),
    # -- backups: simple intervals, a retention that keeps something, restic URLs --------
    ("backup-enabled-str", backup(enabled="yes"), ["enabled = 'yes'", "true or false"]),
    ("backup-interval-cron", backup(interval="0 * * * *"), ["interval = '0 * * * *'", "hourly"]),
    ("backup-interval-7min", backup(interval="7min"), ["interval = '7min'", "dividing 60"]),
    ("backup-interval-5h", backup(interval="5h"), ["interval = '5h'", "dividing 24"]),
    ("backup-interval-int", backup(interval=3600), ["interval = 3600", "a string"]),
    (
        "backup-retention-none",
        backup(retention={"hourly": 0, "daily": 0}),
        ["valkey_backup.retention", "keeps no snapshot", "allowed"],
    ),
    (
        "backup-retention-negative",
        backup(retention={"hourly": -1, "daily": 30}),
        ["retention.hourly = -1", "allowed"],
    ),
    ("backup-retention-typo", backup(retention={"hours": 24, "daily": 1}), ["hours", "unknown"]),
    ("backup-repo-relative", backup(repository="backups"), ["repository = 'backups'", "absolute"]),
    ("backup-repo-dotdot", backup(repository="/var/../tmp"), ["repository", "normalised"]),
    ("backup-offsite-http", backup(offsite="http://x/y"), ["offsite = 'http://x/y'", "sftp:"]),
    (
        "backup-offsite-shell",
        backup(offsite="sftp:u@h:/srv/$(reboot)"),
        ["offsite = 'sftp:u@h:/srv/$(reboot)'", "restic repository URL"],
    ),
    (
        "backup-instance-unknown",
        backup(instances=["main"]),
        ["valkey_backup.instances", "'main'", "this host's instances"],
    ),
    ("backup-instance-bad", backup(instances=["Main"]), ["instances", "lowercase letter"]),
    ("backup-instance-twice", backup(instances=["cache", "cache"]), ["each instance once"]),
    ("backup-delay-neg", backup(random_delay_s=-5), ["random_delay_s = -5", "allowed"]),
    ("backup-unknown", backup(keep=3), ["valkey_backup.keep", "unknown setting"]),
]


def refusal(data: dict, host: str = HOST) -> str:
    with pytest.raises(PlanError) as info:
        topology.validate([Plan.from_host_data(host, data)])
    return str(info.value)


def test_the_table_has_at_least_sixty_distinct_mistakes():
    assert len(BAD_PLANS) >= 60
    assert len({row[0] for row in BAD_PLANS}) == len(BAD_PLANS)


@pytest.mark.parametrize(
    ("data", "expected"), [r[1:] for r in BAD_PLANS], ids=[r[0] for r in BAD_PLANS]
)
def test_refused_with_one_line_naming_host_field_value_and_what_is_allowed(data, expected):
    message = refusal(data)
    lines = message.splitlines()
    assert lines[0] == "invalid plan", message
    matching = [line for line in lines[1:] if all(part in line for part in expected)]
    assert matching, f"no line holds {expected}:\n{message}"
    assert matching[0].startswith(f"host {HOST}: "), matching[0]
    assert "allowed" in matching[0], matching[0]


@pytest.mark.parametrize("data", [r[1] for r in BAD_PLANS], ids=[r[0] for r in BAD_PLANS])
def test_the_packaged_deploy_stops_before_its_first_operation(data):
    inventory = Inventory(([HOST], data))
    state = State(inventory=inventory, config=Config())
    with ctx_inventory.use(inventory), pytest.raises(DeployError) as info:
        add_deploy(state, valkey_plan, host=inventory.get_host(HOST))
    assert state.get_op_order() == [], "an operation was added before the plan was refused"
    assert "invalid plan" in str(info.value)


def test_a_host_name_that_could_inject_a_config_line_is_refused():
    message = refusal({}, host="web-1\nbind 0.0.0.0")
    assert "host = 'web-1\\nbind 0.0.0.0'" in message and "allowed" in message


GOOD_PLANS = [
    {},
    instances(cache(extra_config={"hz": 20, "notify-keyspace-events": "Ex"})),
    instances(
        cache(extra_config={"timeout": "300", "client-output-buffer-limit": "pubsub 32mb 8mb 60"})
    ),
    instances(cache(bind=["-::1", "127.0.0.1"]), primary(bind=["::1"])),
    instances(cache(tls={**TLS, "only": True}), primary(port=6390 - 1)),
    instances(cache(), **app(group="app_users", env_dir="/srv/app/valkey")),
    instances(cache(), **app(group="www-data", hosted_url="valkeys://db.example.com:6380")),
    instances(cache(), **app(hosted_url="valkey://[2001:db8::1]:6379")),
    instances(cache(), **app(hosted=hosted())),
    instances(cache(), **app(hosted=hosted(login="token", user=None, tls_server_name="db.x"))),
    instances(cache(), **app(hosted=hosted(mode="cluster", seeds=["10.0.0.2:6380"]))),
    instances(cache(), **app(hosted={"url": "valkey://10.0.0.9:6379", "login": "per-workload"})),
    {"valkey_instances": [cache()], "valkey_secrets_file": "/root/.config/vp/s.json"},
    {"valkey_debian_mirror": "https://mirror.example.org:8443/debian"},
    instances(node(7000), node(7001), **ACL, **app(cache_instance=None)),
    instances(cache(bind=["fe80::1%eth0"]), **ACL),
    exporter(enabled=False, port_offset=1),
    exporter(listen="0.0.0.0", port_offset=100, key_patterns=["db1=usr:*", "vp:lru:*"]),
    exporter(listen="fe80::1%eth0"),
    backup(interval="15min", retention={"hourly": 0, "daily": 7, "weekly": 4}),
    backup(interval="6h", offsite="s3:s3.amazonaws.com/bucket/valkey", instances=["cache"]),
    backup(offsite="sftp:backup@vault.example.org:/srv/restic", repository="/srv/backups"),
]


@pytest.mark.parametrize("data", GOOD_PLANS)
def test_valid_plans_keep_passing(data):
    plan = Plan.from_host_data(HOST, data)
    assert plan.host == HOST


def test_extra_config_may_tune_the_deploys_defaults_once():
    plan = Plan.from_host_data(HOST, instances(cache(extra_config={"timeout": 300, "hz": "20"})))
    (inst,) = plan.instances
    assert inst.tunables["timeout"] == "300" and inst.extra_directives == {"hz": "20"}


def test_secrets_file_under_home_tilde_is_made_absolute():
    plan = Plan.from_host_data(HOST, {"valkey_secrets_file": "~/.config/vp/s.json"})
    assert plan.secrets_file is not None and plan.secrets_file.startswith("/")
