"""The test server fixture itself: a real valkey-server that keeps data across restarts."""


def test_real_server_answers_and_keeps_data_across_restart(valkey_factory):
    server = valkey_factory(appendonly="yes", appendfsync="always")
    client = server.client()
    assert client.info("server")["valkey_version"].startswith("8.")
    client.set("k", "v")
    server.restart()
    assert server.client().get("k") == b"v"
