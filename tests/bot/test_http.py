"""The aiohttp transport (bot/http.py) under python-telegram-bot's real Bot.

Against the loopback fake Bot API (every request checked against api.json) and, for the
failure cases, against loopback sockets that stall or refuse: PTB must see the same errors
it sees from its own httpx transport (TimedOut, NetworkError, RetryAfter).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError, RetryAfter, TimedOut

from bot.http import AiohttpRequest
from tests.fakes.telegram_api import FakeBotAPI, UploadedFile

TOKEN = "123456:HTTP-TEST"
CHAT = 4242


def _logged(error: BaseException) -> str:
    """The error as a log line with its traceback shows it (PTB logs polling errors so)."""
    return "".join(traceback.format_exception(error))


def _bot(base: str, request: AiohttpRequest) -> Bot:
    return Bot(TOKEN, base_url=f"{base}/bot", request=request, get_updates_request=request)


async def failure(
    url: str,
    error: type[Exception],
    match: str | None,
    request: AiohttpRequest | None = None,
    **kw: Any,
) -> Exception:
    """Post once through a transport of its own, which must raise ``error``; return it."""
    request = request or AiohttpRequest()
    await request.initialize()
    try:
        with pytest.raises(error, match=match) as caught:
            await request.post(url, **kw)
    finally:
        await request.shutdown()
    return caught.value


@contextlib.asynccontextmanager
async def answering(response: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback server that reads each request and sends ``response``, then hangs up.

    Yields its port and the request lines it saw, in order.
    """
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        seen.append(head.split(b"\r\n")[0])
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def stalled() -> AsyncIterator[str]:
    """A loopback server that accepts connections and reads, but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_calls_and_uploads_reach_the_bot_api_as_sent(fake_bot_api: FakeBotAPI) -> None:
    fake_bot_api.register_chat(CHAT, "private")
    request = AiohttpRequest()
    async with _bot(fake_bot_api.base_url.removesuffix("/bot"), request) as bot:
        sent = await bot.send_message(CHAT, "<b>Ständig</b> — صباح", parse_mode="HTML")
        document = await bot.send_document(
            CHAT, b"code,count\nQ1,3\n", filename="Отчёт за неделю.csv", caption="n=3"
        )
    assert sent.text == "Ständig — صباح"
    assert document.document is not None
    # The name as given: aiohttp's default would percent-encode it.
    assert document.document.file_name == "Отчёт за неделю.csv"
    (upload,) = fake_bot_api.calls_of("sendDocument")
    part = upload["document"]
    assert isinstance(part, UploadedFile)
    assert (part.filename, part.content_type, part.data) == (
        "Отчёт за неделю.csv",
        "text/csv",
        b"code,count\nQ1,3\n",
    )
    assert upload["caption"] == "n=3"  # parameters travel in the same multipart body
    assert fake_bot_api.violations == []


@pytest.fixture
def bodies(
    fake_bot_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, str, bytes]]:
    """Each request the fake gets, as it came: (Bot API method, Content-Type, body).

    The fake records parameters once decoded, which hides how they travelled.
    """
    seen: list[tuple[str, str, bytes]] = []
    handle = fake_bot_api._handle_http

    def spy(verb: str, raw_path: str, headers: dict[str, str], body: bytes) -> Any:
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        seen.append((raw_path.rsplit("/", 1)[-1], content_type, body))
        return handle(verb, raw_path, headers, body)

    monkeypatch.setattr(fake_bot_api, "_handle_http", spy)
    return seen


async def test_a_call_goes_as_json_and_an_upload_as_multipart(
    fake_bot_api: FakeBotAPI, bodies: list[tuple[str, str, bytes]]
) -> None:
    """JSON costs a fraction of url-encoding; the Bot API takes it for all but uploads."""
    fake_bot_api.register_chat(CHAT, "private")
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Да", callback_data="yes"),
                InlineKeyboardButton("لا", callback_data="no"),
            ]
        ]
    )
    text = "<b>Ständig</b> — صباح, Привет"
    async with _bot(fake_bot_api.base_url.removesuffix("/bot"), AiohttpRequest()) as bot:
        sent = await bot.send_message(CHAT, text, parse_mode="HTML", reply_markup=keyboard)
        await bot.send_document(CHAT, b"code,count\nQ1,3\n", filename="Отчёт.csv")
    assert sent.text == "Ständig — صباح, Привет"
    by_method = {method: (content_type, body) for method, content_type, body in bodies}
    assert set(by_method) == {"getMe", "sendMessage", "sendDocument"}
    # getMe has no parameters: an empty body, as before.
    assert by_method["getMe"][1] == b""
    content_type, body = by_method["sendMessage"]
    assert content_type == "application/json"
    # Typed values: an int stays an int and the keyboard an object (not a JSON string in a
    # string, as RequestData.json_payload would send it).
    assert json.loads(body) == {
        "chat_id": CHAT,
        "text": text,
        "parse_mode": "HTML",
        "reply_markup": {
            "inline_keyboard": [
                [{"text": "Да", "callback_data": "yes"}, {"text": "لا", "callback_data": "no"}]
            ]
        },
    }
    # Raw UTF-8, not \u escapes: a third of the bytes for Arabic or Cyrillic.
    assert "صباح, Привет".encode() in body
    (call,) = fake_bot_api.calls_of("sendMessage")
    assert call["reply_markup"] == json.loads(body)["reply_markup"]
    assert by_method["sendDocument"][0].startswith("multipart/form-data; boundary=")
    assert fake_bot_api.violations == []


async def test_429_becomes_retry_after(
    fake_bot_api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PTB_TIMEDELTA", "true"
    )  # retry_after as a timedelta, as in the other e2e harnesses
    fake_bot_api.register_chat(CHAT, "private")
    fake_bot_api.fail_next("sendMessage", status=429, retry_after=7)
    async with _bot(fake_bot_api.base_url.removesuffix("/bot"), AiohttpRequest()) as bot:
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(CHAT, "hello")
        # The connection is still good for the next call.
        await bot.send_message(CHAT, "hello again")
    assert caught.value.retry_after.total_seconds() == 7


async def test_a_hang_up_is_a_network_error(fake_bot_api: FakeBotAPI) -> None:
    fake_bot_api.register_chat(CHAT, "private")
    async with _bot(fake_bot_api.base_url.removesuffix("/bot"), AiohttpRequest()) as bot:
        fake_bot_api.set_unreachable(True)
        with pytest.raises(NetworkError, match=r"aiohttp\.") as caught:
            await bot.send_message(CHAT, "hello")
        fake_bot_api.set_unreachable(False)
        await bot.send_message(CHAT, "back")
    assert not isinstance(caught.value, TimedOut)


async def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now.
    url = f"http://127.0.0.1:{port}/bot{TOKEN}/getMe"
    refused = await failure(url, NetworkError, r"aiohttp\.ClientConnectorError")
    assert TOKEN not in _logged(refused)


async def test_a_silent_server_times_out_after_the_read_timeout(stalled: str) -> None:
    started = time.monotonic()
    # The call's own timeout wins over the default of 30 s.
    request = AiohttpRequest(read_timeout=30)
    async with asyncio.timeout(5):  # a transport that ignores it fails here, not hangs
        await failure(f"{stalled}/bot{TOKEN}/getMe", TimedOut, None, request, read_timeout=0.3)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 5


async def test_a_full_pool_times_out_without_sending(stalled: str) -> None:
    request = AiohttpRequest(connection_pool_size=1)
    await request.initialize()
    try:
        # The only connection is taken by a call the server never answers.
        first = asyncio.create_task(request.post(f"{stalled}/bot{TOKEN}/getMe", read_timeout=5))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(TimedOut, match="not sent") as caught:
            await request.post(f"{stalled}/bot{TOKEN}/getMe", pool_timeout=0.2, connect_timeout=0.1)
        waited = time.monotonic() - started
        # aiohttp's own error names the URL, token and all; PTB logs polling errors with
        # their traceback, so nothing of it may travel with the error.
        assert TOKEN not in _logged(caught.value)
        assert not first.done()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await request.shutdown()
    assert 0.3 <= waited < 3


async def test_a_request_needs_an_initialized_transport_and_survives_a_restart(
    fake_bot_api: FakeBotAPI,
) -> None:
    request = AiohttpRequest()
    url = f"{fake_bot_api.base_url}{TOKEN}/getMe"
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")
    await request.initialize()
    code, _ = await request.do_request(url, "POST")
    await request.shutdown()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")
    # An Application stopped and started again initializes its request again.
    await request.initialize()
    again, body = await request.do_request(url, "POST")
    await request.shutdown()
    assert (code, again) == (200, 200)
    assert b'"ok":true' in body.replace(b" ", b"")


async def test_the_environment_s_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP(S)_PROXY and NO_PROXY are honoured, as PTB's httpx transport honours them."""
    body = b'{"ok":true,"result":{"id":1,"is_bot":true,"first_name":"P","username":"p_bot"}}'
    ok = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    # The origin the bot asks for does not exist: only the proxy can answer.
    target = f"http://api.invalid/bot{TOKEN}/getMe"
    async with answering(ok) as (port, seen):
        for name in (
            "NO_PROXY",
            "no_proxy",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        request = AiohttpRequest()
        await request.initialize()
        try:
            via_proxy = await request.post(target)
        finally:
            await request.shutdown()
        monkeypatch.setenv("NO_PROXY", "api.invalid")
        await request.initialize()  # a restart reads the environment again
        try:
            with pytest.raises(NetworkError):
                await request.post(target)
        finally:
            await request.shutdown()
    assert via_proxy["username"] == "p_bot"
    assert seen == [f"POST {target} HTTP/1.1".encode()]


async def test_a_long_poll_waits_its_own_timeout_on_top_of_the_read_timeout(stalled: str) -> None:
    """PTB adds getUpdates' ``timeout`` to the transport's ``read_timeout``."""
    request = AiohttpRequest(read_timeout=0.5)
    # Not initialized as a whole: that would call getMe, which the server never answers.
    bot = Bot(TOKEN, base_url=f"{stalled}/bot", request=request, get_updates_request=request)
    await request.initialize()
    try:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            async with asyncio.timeout(5):  # fails, rather than hangs, if the bound is lost
                await bot.get_updates(timeout=1)
        waited = time.monotonic() - started
    finally:
        await request.shutdown()
    assert 1.4 <= waited < 5


async def test_a_redirect_is_not_followed() -> None:
    """As with httpx: the Bot API never redirects, so a redirect is an error, sent once."""
    found = (
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n"
    )
    async with answering(found) as (port, seen):
        await failure(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe", NetworkError, "302")
    assert seen == [f"POST /bot{TOKEN}/getMe HTTP/1.1".encode()]


async def test_a_proxy_refusal_names_neither_the_token_nor_the_proxy_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp's message quotes the proxy URL, password included; the error must not."""
    refusal = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n"
    )
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with answering(refusal) as (port, _):
        monkeypatch.setenv("HTTPS_PROXY", f"http://waymark:s3cret-pw@127.0.0.1:{port}")
        refused = await failure(f"https://api.invalid/bot{TOKEN}/getMe", NetworkError, "407")
    logged = _logged(refused)
    assert "s3cret-pw" not in logged
    assert TOKEN not in logged


async def test_a_misconfigured_url_is_reported_without_the_token() -> None:
    """aiohttp quotes an invalid URL whole; a mistyped base URL must not log the token."""
    url = f"http://127.0.0.1:99999/bot{TOKEN}/getMe"
    logged = _logged(await failure(url, NetworkError, "InvalidUrlClientError"))
    assert "bot<token>/getMe" in logged  # the rest of the URL stays, to find the mistake
    assert TOKEN not in logged


async def test_a_large_upload_is_streamed(fake_bot_api: FakeBotAPI) -> None:
    """Bytes over 1 MB go as a stream: aiohttp warns that sending them raw holds the event
    loop, and the test suite runs with warnings as errors."""
    fake_bot_api.register_chat(CHAT, "private")
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with _bot(fake_bot_api.base_url.removesuffix("/bot"), AiohttpRequest()) as bot:
        await bot.send_document(CHAT, payload, filename="export.bin")
    (upload,) = fake_bot_api.calls_of("sendDocument")
    assert upload["document"].data == payload
