"""Waymark's HTTP transport to the Bot API: python-telegram-bot's ``BaseRequest`` on aiohttp.

python-telegram-bot leaves the transport open (``ApplicationBuilder.request``) and ships
one, on httpx. Waymark uses aiohttp instead, for what a busy bot pays per request:

- httpcore, under httpx, re-examines every pooled connection on each request and each
  response (a ``poll()`` on every idle socket, and a keep-alive check that is quadratic in
  the pool's size: encode/httpcore#1035, pydantic/httpx2#1169). With 500 chats at once,
  that bookkeeping was most of the bot's CPU, and a bare PTB bot managed 164-237 updates a
  second; the same bare bot on this transport managed 932-987 (docs/benchmarks.md).
- aiohttp parses HTTP in C and keeps its idle connections in a per-host queue.

Only the transport changes: PTB still builds every request, maps every status code to its
errors (429 becomes ``RetryAfter``), and the rate limiter and retries sit above this class.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
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


#: A Bot API URL's token part, for error messages that quote the URL.
_TOKEN_IN_URL = re.compile(r"/(file/)?bot[^/\s]*/")


def _given(value: object, default: float | None) -> float | None:
    """The timeout a call asked for, or this transport's default when it left it unset."""
    if value is BaseRequest.DEFAULT_NONE:
        return default
    return value  # type: ignore[return-value]  # a float or None, per BaseRequest's contract


class AiohttpRequest(BaseRequest):
    """Bot API requests over one ``aiohttp.ClientSession`` with a bounded connection pool.

    Timeouts mean what they mean for ``HTTPXRequest``, as far as aiohttp allows: ``pool`` +
    ``connect`` bound getting a connection (aiohttp's ``connect``), ``connect`` bounds the
    TCP connect, and ``read`` bounds each wait for response bytes. aiohttp has no write
    timeout, so the four together bound the whole request: nothing can hang for ever.

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
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
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
        timeout = aiohttp.ClientTimeout(
            total=None if None in parts else sum(p for p in parts if p is not None),
            connect=None if pool is None or connect is None else pool + connect,
            sock_connect=connect,
            sock_read=read,
        )
        fields = request_data.json_parameters if request_data is not None else None
        data: aiohttp.FormData | dict[str, str] | None = fields
        if files:
            # Parameters and files in one multipart body, as httpx builds it for PTB.
            data = aiohttp.FormData(fields or {})
            for name, (filename, content, mime) in files.items():
                data.add_field(name, content, filename=filename, content_type=mime)
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers={"User-Agent": self.USER_AGENT},
                timeout=timeout,
                proxy=self._proxy(url),
            ) as response:
                return response.status, await response.read()
        # Raised "from None": aiohttp's own errors can carry the request URL ("Connection
        # timeout to host http://…/bot<token>/getUpdates"), and PTB logs polling errors with
        # their traceback, so the token would reach the log.
        except aiohttp.ConnectionTimeoutError:
            # aiohttp's "connect" covers waiting for a pooled connection and connecting: either
            # way nothing was sent, which is what a caller deciding to retry needs to know.
            raise TimedOut(_CONNECT_MESSAGE) from None
        except TimeoutError:  # aiohttp's read and total timeouts
            raise TimedOut from None
        except aiohttp.ClientError as err:
            # The class name too: some aiohttp errors have an empty message.
            text = _TOKEN_IN_URL.sub(r"/\1bot<token>/", str(err))
            raise NetworkError(f"aiohttp.{type(err).__name__}: {text}") from None

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
