"""The asyncio workload clients do the same job as the sync ones, on a real valkey-server."""

from __future__ import annotations

import asyncio
import time

import pytest
import valkey.asyncio

from tests.server.workload_helpers import by_name, tier_for
from tests.valkey_server import ValkeyProcess, free_port
from valkey_plans.client.aclients import AsyncClients
from valkey_plans.client.clients import CommandRefused


async def until(condition, what: str, limit: float = 10.0) -> None:
    """Poll for a server-side state; the limit only bounds a hang, it is not a speed check."""
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw: {what}")
        await asyncio.sleep(0.01)


def test_async_names_guards_and_for_db(valkey_server: ValkeyProcess):
    async def main() -> None:
        async with AsyncClients(tier_for(valkey_server)) as clients:
            await clients.api.set("k", "v")
            assert await clients.blocking.blpop("q", timeout=0.01) is None
            pubsub = clients.subscriber.pubsub()
            await pubsub.subscribe("news")
            await clients.background.dbsize()
            await clients.for_db(3).api.set("k", "db3")
            assert await clients.api.get("k") == b"v"
            assert await clients.for_db(3).api.get("k") == b"db3"
            names = by_name(valkey_server)
            for workload in ("api", "blocking", "subscriber", "background"):
                assert f"shop:{workload}" in names
            assert sorted(e["db"] for e in names["shop:api"]) == ["0", "3"]

            with pytest.raises(CommandRefused, match="BLPOP refused on shop:api.*clients.blocking"):
                await clients.api.blpop("q", 1)
            with pytest.raises(CommandRefused, match="SELECT refused on shop:background"):
                await clients.background.execute_command("SELECT", 2)
            with pytest.raises(CommandRefused, match="GET refused on shop:subscriber"):
                await clients.subscriber.get("k")
            with pytest.raises(CommandRefused, match="would block forever"):
                await clients.blocking.blpop("q")
            with pytest.raises(CommandRefused, match=r"pubsub\(\) refused on shop:api"):
                clients.api.pubsub()
            with pytest.raises(CommandRefused, match="XREAD refused on shop:api"):
                clients.api.pipeline().xread({"s": 0}, block=5)
            assert await clients.api.pipeline().set("p", 1).get("p").execute() == [True, b"1"]
            await pubsub.aclose()

    asyncio.run(main())


def test_async_api_finishes_1000_round_trips_while_blocking_waits(valkey_server: ValkeyProcess):
    async def main() -> list[str]:
        events: list[str] = []
        async with AsyncClients(tier_for(valkey_server)) as clients:
            pubsub = clients.subscriber.pubsub()
            await pubsub.subscribe("events")

            async def block() -> None:
                # Released by the api once it is done, never by the timeout: the test's
                # order holds however slow the machine (the timeout only bounds a hang).
                popped = await clients.blocking.blpop("filled-last", timeout=25)
                assert popped == (b"filled-last", b"go")
                events.append("blpop returned")

            async def parked() -> bool:
                entries = by_name(valkey_server).get("shop:blocking", [])
                return any("b" in e["flags"] for e in entries)

            blocker = asyncio.create_task(block())
            await until(parked, "the blocking client parked in BLPOP")
            for i in range(1000):
                await clients.api.set(f"k{i}", i)
                assert await clients.api.get(f"k{i}") == str(i).encode()
            events.append("api done")
            assert await parked(), "the BLPOP must still be pending when the api finished"
            await clients.api.rpush("filled-last", "go")
            await blocker
            await pubsub.aclose()
        return events

    assert asyncio.run(main()) == ["api done", "blpop returned"]


def test_async_api_survives_a_server_restart_without_losing_acknowledged_writes(valkey_factory):
    server = valkey_factory("durable", appendonly="yes", appendfsync="always")
    run_before = server.client().info("server")["run_id"]

    async def main() -> list[int]:
        acked: list[int] = []
        async with AsyncClients(tier_for(server)) as clients:

            async def write(first: int, until_done: asyncio.Future[object]) -> int:
                i = first
                while not until_done.done():
                    await clients.api.set(f"acked:{i}", i)
                    acked.append(i)
                    i += 1
                    await asyncio.sleep(0.002)  # idle like a request handler
                return i

            warmed = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.3, warmed.set_result, None)
            after_warmup = await write(0, warmed)
            # the server goes down and comes back while the loop keeps writing
            restarted = asyncio.ensure_future(asyncio.to_thread(server.restart))
            after_restart = await write(after_warmup, restarted)
            await restarted
            done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.3, done.set_result, None)
            await write(after_restart, done)
            run_id = (await clients.api.info("server"))["run_id"]
        assert run_id != run_before
        return acked

    acked = asyncio.run(main())
    assert len(acked) > 2
    values = server.client().mget([f"acked:{i}" for i in acked])
    assert values == [str(i).encode() for i in acked]


def test_async_cluster_mode_uses_the_asyncio_cluster_client(valkey_factory):
    node = valkey_factory("cluster", cluster_enabled="yes", cluster_port=str(free_port()))
    node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 10
    while node.client().cluster("info")["cluster_state"] != "ok":
        assert time.monotonic() < deadline, "single-node cluster never became ok"
        time.sleep(0.05)

    async def main() -> None:
        async with AsyncClients(tier_for(node, mode="cluster")) as clients:
            assert isinstance(clients.api, valkey.asyncio.ValkeyCluster)
            await clients.api.set("usr:x", "1")
            assert await clients.api.get("usr:x") == b"1"
            with pytest.raises(CommandRefused, match="BLPOP refused on shop:api"):
                await clients.api.blpop("q", 1)
            assert "shop:api" in by_name(node)

    asyncio.run(main())
