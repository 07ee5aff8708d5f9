"""Waymark's HTTP transport to the Bot API: python-telegram-bot's ``BaseRequest`` on aiohttp.

python-telegram-bot leaves the transport open (``ApplicationBuilder.request``) and ships
one, on httpx. Waymark uses aiohttp instead, for what a busy bot pays per request:

- httpcore, under httpx, re-examines every pooled connection on each request and each
  response (a ``poll()`` on every idle socket, and a keep-alive check that is quadratic in
  the pool's size: encode/httpcore#1035, pydantic/httpx2#1169). With 500 chats at once,
  that bookkeeping was most of the bot's CPU: in the same benchmark runs a bare PTB bot
  answered 134-243 updates a second on httpx and 603-848 on this transport
  (docs/benchmarks.md).
- aiohttp parses HTTP in C and keeps its idle connections in a per-host queue.
- A request without files goes as a JSON body, not url-encoded as httpx sends it: aiohttp's
  url-encoding cost 14 times json.dumps (84 µs against 6 µs for a typical editMessageText).

Only the transport changes: PTB still builds every request's parameters, maps every status
code to its errors (429 becomes ``RetryAfter``), and the rate limiter and retries sit above
this class.
What httpx does by default, this does too: no redirects followed, certifi's certificates,
proxies from the environment.
"""

from __future__ import annotations

import io
import json
import re
import ssl
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import certifi
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

#: PTB's own defaults for ``HTTPXRequest``, kept so that moving transport changes no timeout.
DEFAULT_POOL_SIZE = 256
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 1.0
MEDIA_WRITE_TIMEOUT = 20.0

_CONNECT_MESSAGE = (
    "Pool or connect timeout: no connection to the Bot API was free or could be made in "
    "time, so the request was not sent."
)


#: What an error message must not carry: a bot token, in a Bot API path (``bot<id>:<secret>``,
#: wherever the path stands in the URL) or alone (a real one has a 35-character secret), and
#: credentials in a URL (a proxy's ``user:password@``). Host and port ("127.0.0.1:443") stay.
_SECRETS = (
    (re.compile(r"bot\d+:[A-Za-z0-9_-]+"), "bot<token>"),
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}"), "<token>"),
    (re.compile(r"//[^/@\s]*@"), "//<credentials>@"),
)


def _scrubbed(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _given(value: object, default: float | None) -> float | None:
    """The timeout a call asked for, or this transport's default when it left it unset."""
    if value is BaseRequest.DEFAULT_NONE:
        return default
    return value  # type: ignore[return-value]  # a float or None, per BaseRequest's contract


class AiohttpRequest(BaseRequest):
    """Bot API requests over one ``aiohttp.ClientSession`` with a bounded connection pool.

    Timeouts, mapped onto aiohttp's: ``pool`` + ``connect`` bound getting a connection (a
    free one from the pool, or a new one), ``connect`` bounds the TCP and TLS connect, and
    ``read`` bounds each wait for response bytes, as with httpx. aiohttp has no write
    timeout. A request without files fits in the socket's buffer, so its write cannot
    stall; an upload's whole exchange is bounded instead, by the four timeouts together
    (with ``media_write_timeout`` as the write part), so that it cannot hang for ever.

    Bodies: ``application/json`` for a request without files (the Bot API takes JSON for
    every method but uploads), ``multipart/form-data`` for an upload, and an empty body
    without parameters.

    Args:
        connection_pool_size: Connections kept to the Bot API at most.
        read_timeout: Default seconds to wait for response bytes.
        write_timeout: Default seconds for sending the request (see above).
        connect_timeout: Default seconds for the TCP connect.
        pool_timeout: Default seconds to wait for a free connection in the pool.
        media_write_timeout: ``write_timeout`` for requests that upload files.
    """

    __slots__ = ("_defaults", "_media_write_timeout", "_pool_size", "_proxies", "_session")

    def __init__(
        self,
        *,
        connection_pool_size: int = DEFAULT_POOL_SIZE,
        read_timeout: float | None = READ_TIMEOUT,
        write_timeout: float | None = WRITE_TIMEOUT,
        connect_timeout: float | None = CONNECT_TIMEOUT,
        pool_timeout: float | None = POOL_TIMEOUT,
        media_write_timeout: float | None = MEDIA_WRITE_TIMEOUT,
    ) -> None:
        self._pool_size = connection_pool_size
        self._defaults = (read_timeout, write_timeout, connect_timeout, pool_timeout)
        self._media_write_timeout = media_write_timeout
        # Made in initialize(): an aiohttp session belongs to the running event loop.
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout (PTB adds a long poll's own timeout to it)."""
        return self._defaults[0]

    async def initialize(self) -> None:
        """Open the session (again, after a shutdown)."""
        if self._session is None or self._session.closed:
            # certifi's certificates, as httpx uses: a slim image may lack the system's.
            tls = ssl.create_default_context(cafile=certifi.where())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=tls),
                # The Bot API sets no cookies; a jar would only keep state between chats.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._proxies.clear()  # the environment is read again on a restart

    async def shutdown(self) -> None:
        """Close the session and its connections."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send one request; return the status code and the body.

        Raises:
            RuntimeError: The transport is not initialized.
            TimedOut: A timeout ran out (the message says when nothing was sent).
            NetworkError: Any other failure to reach the Bot API or read its answer.
        """
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        files = request_data.multipart_data if request_data is not None else None
        read, write, connect, pool = self._defaults
        if files:
            write = self._media_write_timeout
        read = _given(read_timeout, read)
        write = _given(write_timeout, write)
        connect = _given(connect_timeout, connect)
        pool = _given(pool_timeout, pool)
        parts = (read, write, connect, pool)
        bounds = [p for p in parts if p is not None]
        upload_bound = sum(bounds) if len(bounds) == len(parts) else None
        timeout = aiohttp.ClientTimeout(
            total=upload_bound if files else None,
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        headers = {"User-Agent": self.USER_AGENT}
        data: aiohttp.FormData | bytes | dict[str, str] | None = None  # no request_data: no body
        if request_data is not None:
            if files:
                # Parameters and files in one multipart body, as httpx builds it for PTB;
                # names sent as given (aiohttp would percent-encode "Отчёт.csv"), and bytes as
                # a stream, which aiohttp sends without holding the event loop.
                data = aiohttp.FormData(request_data.json_parameters, quote_fields=False)
                for name, (filename, content, mime) in files.items():
                    stream = io.BytesIO(content) if isinstance(content, bytes) else content
                    data.add_field(name, stream, filename=filename, content_type=mime)
            elif params := request_data.parameters:
                # JSON, not the url-encoded form httpx sends: aiohttp's url-encoding took
                # ~84 µs for a typical editMessageText (HTML text, a 4-button keyboard),
                # json.dumps ~6 µs, and the Bot API takes JSON for every method but file
                # uploads. Raw UTF-8, which the Bot API requires, is smaller than \u escapes
                # for Arabic or Cyrillic. Bytes and the header, not aiohttp's json=, which
                # would serialize again.
                data = json.dumps(params, ensure_ascii=False).encode()
                headers["Content-Type"] = "application/json"
            else:
                data = {}  # no parameters (getMe): an empty url-encoded form, as before
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                proxy=self._proxy(url),
                # The Bot API does not redirect; httpx (PTB's default) never follows one.
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        # Raised "from None": aiohttp's own errors can carry the request URL ("Connection
        # timeout to host http://…/bot<token>/getUpdates") or a proxy's password, and PTB
        # logs polling errors with their traceback, so they would reach the log.
        except aiohttp.ConnectionTimeoutError:
            # aiohttp's "connect" covers waiting for a pooled connection and connecting: either
            # way nothing was sent, which is what a caller deciding to retry needs to know.
            raise TimedOut(_CONNECT_MESSAGE) from None
        except TimeoutError:  # aiohttp's read and total timeouts
            raise TimedOut from None
        except aiohttp.ClientError as err:
            # The class name too: some aiohttp errors have an empty message.
            raise NetworkError(f"aiohttp.{type(err).__name__}: {_scrubbed(str(err))}") from None

    def _proxy(self, url: str) -> str | None:
        """The proxy the environment names for the URL's origin, looked up once per origin.

        Like httpx, PTB's default transport, this honours ``HTTP(S)_PROXY``, ``ALL_PROXY``
        and ``NO_PROXY``. aiohttp's own ``trust_env`` would look them up, and read
        ``~/.netrc``, on every request: 0.3 ms a call here, a third of a bare bot's update.
        """
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        if origin not in self._proxies:
            found = getproxies()
            proxy = found.get(parts.scheme) or found.get("all")
            self._proxies[origin] = None if proxy_bypass(parts.hostname or "") else proxy
        return self._proxies[origin]
