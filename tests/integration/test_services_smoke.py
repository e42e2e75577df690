"""Every real service the suite relies on answers, and survives a restart.

If one of these fails, the failures elsewhere in integration/ and e2e/ are about
the environment, not the code: read this file's result first.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

ServiceCtl = Callable[[str, str], str]


def _pg_connect(url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host,
        port=u.port,
        user=u.username,
        password=u.password,
        dbname=u.database,
        connect_timeout=5,
    )


# --------------------------------------------------------------------------- PostgreSQL


def test_postgres_answers_in_a_fresh_database(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    with _pg_connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        database, version = conn.execute(
            "SELECT current_database(), current_setting('server_version_num')::int"
        ).fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert database == postgres_url.rsplit("/", 1)[1]
    assert version >= 150000
    assert tables == (0,)


def test_postgres_survives_stop_and_start(postgres_url: str, service_ctl: ServiceCtl) -> None:
    import psycopg

    with _pg_connect(postgres_url) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before the outage')")

    service_ctl("postgres", "stop")
    assert "stopped" in service_ctl("postgres", "status")
    with pytest.raises(psycopg.OperationalError):
        _pg_connect(postgres_url).close()

    service_ctl("postgres", "start")
    with _pg_connect(postgres_url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before the outage",)]


def test_postgres_recovers_from_a_crash(postgres_url: str, service_ctl: ServiceCtl) -> None:
    with _pg_connect(postgres_url) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    service_ctl("postgres", "kill")
    service_ctl("postgres", "restart")
    with _pg_connect(postgres_url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]


# --------------------------------------------------------------------------- NATS


async def test_nats_jetstream_round_trip(nats_url: str) -> None:
    import nats

    stream, subject = f"SMOKE_{uuid.uuid4().hex[:8]}", f"smoke.{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        ack = await js.publish(subject, b"ping")
        assert ack.stream == stream
        sub = await js.pull_subscribe(subject, durable="smoke")
        [msg] = await sub.fetch(1, timeout=5)
        await msg.ack()
        assert msg.data == b"ping"
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_nats_jetstream_keeps_streams_across_restart(
    nats_url: str, service_ctl: ServiceCtl
) -> None:
    import nats

    stream, subject = f"KEPT_{uuid.uuid4().hex[:8]}", f"kept.{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])  # file storage by default
        await js.publish(subject, b"durable")
    finally:
        await nc.close()

    await asyncio.to_thread(service_ctl, "nats", "restart")

    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        assert info.state.messages == 1
        msg = await js.get_msg(stream, seq=1)
        assert msg.data == b"durable"
        await js.delete_stream(stream)
    finally:
        await nc.close()


# --------------------------------------------------------------------------- Kafka


async def test_kafka_produce_and_consume_by_partition(kafka_url: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_url)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"ping", key=b"k", partition=0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_url, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        record = await asyncio.wait_for(consumer.getone(), 15)
    finally:
        await consumer.stop()
    assert (record.value, record.key, record.offset) == (b"ping", b"k", sent.offset)


@pytest.mark.timeout(90)
async def test_kafka_consumer_group_receives(kafka_url: str) -> None:
    # Tansu's JoinGroup/SyncGroup takes ~3-18 s before the first record arrives.
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"group-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_url)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"for-the-group")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_url,
        group_id=f"smoke-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 60)
    finally:
        await consumer.stop()
    assert record.value == b"for-the-group"


# --------------------------------------------------------------------------- Chromium


async def test_chromium_renders_a_page(chromium_path: str, chromium_args: list[str]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=chromium_args
        )
        try:
            page = await browser.new_page()
            await page.goto("data:text/html,<title>cockpit</title><h1 id='t'>ready</h1>")
            assert await page.title() == "cockpit"
            assert await page.text_content("#t") == "ready"
            assert await page.evaluate("1 + 1") == 2
        finally:
            await browser.close()
