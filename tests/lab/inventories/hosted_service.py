"""The managed service of tests/lab/test_hosted_external_lab.py, deployed on its own.

The second lab host plays a managed Valkey deployed outside any application's plan:
a `primary` (`svc`) with ACL users per workload and `default` off, TLS only on port
6391 with the certificate the test made (`/etc/ssl/vp-hosted/`). Its passwords are
generated once into the lab dir (`hosted-service-secrets.json`), which the test reads
to hand the application's plan the service's logins, as a provider's console would.
"""

from valkey_plans.lab.inventory import connection, running_lab, secrets_file

PORT, TLS_PORT = 6390, 6391
TLS_DIR = "/etc/ssl/vp-hosted"

_lab = running_lab(3, "tests/lab/inventories/hosted_service.py")
_host = _lab.hosts[1]

hosted_service = [
    (
        _host.name,
        {
            **connection(_lab, _host),
            "valkey_instances": [
                {
                    "name": "svc",
                    "role": "primary",
                    "port": PORT,
                    "bind": ["127.0.0.1", _host.address],
                    "maxmemory": "64mb",
                    "tls": {
                        "port": TLS_PORT,
                        "cert_file": f"{TLS_DIR}/server.crt",
                        "key_file": f"{TLS_DIR}/server.key",
                        "ca_cert_file": f"{TLS_DIR}/ca.crt",
                        "only": True,
                    },
                }
            ],
            "valkey_acl": True,
            "valkey_secrets_file": secrets_file(_lab, "hosted-service"),
            "valkey_secrets_generate": True,
            "valkey_app": {"name": "svc", "hosted_instance": "svc", "cache_instance": None},
        },
    )
]
