"""Log in to an XMPP server on 127.0.0.1 once and report the result as the exit status.

Usage: xmpp_login.py JID PORT [TIMEOUT_SECONDS], with the password as the raw
bytes of stdin. TIMEOUT_SECONDS defaults to 20.

The client negotiates STARTTLS without certificate verification, authenticates
with SASL PLAIN and disconnects as soon as the session starts. Exit statuses:

    0  the session started
    1  SASL authentication failed (the failure condition is printed)
    2  anything else: bad arguments, connection refused, TLS or stream
       errors, or no result within the timeout
"""

import asyncio
import logging
import ssl
import sys

import slixmpp
import slixmpp.util.sasl.client

EXIT_SESSION_STARTED = 0
EXIT_AUTH_FAILED = 1
EXIT_OTHER_ERROR = 2

DEFAULT_TIMEOUT_SECONDS = 20
SERVER_ADDRESS = "127.0.0.1"


def send_credentials_unchanged(value):
    """Return value unchanged, in place of slixmpp's SASLprep step.

    slixmpp 1.8 runs every username and password through SASLprep (NFKC
    normalization, mapping of non-ASCII spaces, rejection of control characters)
    before SASL PLAIN encodes them. The tests need the server to receive the
    exact password bytes, so main() installs this function instead.
    """
    return value


class LoginClient(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="PLAIN")
        self.result = self.loop.create_future()
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("disconnected", self.on_disconnected)

    def finish(self, exit_status, message):
        if not self.result.done():
            self.result.set_result((exit_status, message))

    def on_session_start(self, _event):
        self.finish(EXIT_SESSION_STARTED, f"session started as {self.boundjid.full}")

    def on_failed_auth(self, stanza):
        self.finish(EXIT_AUTH_FAILED, f"authentication failed: {stanza['condition']}")

    def on_connection_failed(self, error):
        self.finish(EXIT_OTHER_ERROR, f"connection failed: {error}")

    def on_stream_error(self, error):
        self.finish(EXIT_OTHER_ERROR, f"stream error: {error['condition']} {error['text']}")

    def on_disconnected(self, reason):
        self.finish(EXIT_OTHER_ERROR, f"disconnected before the session started: {reason}")


async def log_in(client, port, timeout_seconds):
    """Run one login attempt and return (exit status, message)."""
    # The test server uses a self-signed certificate for a made-up domain.
    client.ssl_context.check_hostname = False
    client.ssl_context.verify_mode = ssl.CERT_NONE

    # slixmpp 1.8 resolves default_domain before it connects, and leaves it
    # empty when given an IP address, which sends a DNS query for the empty
    # name. An IP literal resolves without any lookup, to default_port.
    client.default_domain = SERVER_ADDRESS
    client.default_port = port
    client.connect((SERVER_ADDRESS, port), use_ssl=False, force_starttls=True)
    try:
        return await asyncio.wait_for(asyncio.shield(client.result), timeout_seconds)
    except asyncio.TimeoutError:
        return EXIT_OTHER_ERROR, f"timed out after {timeout_seconds:g} s without a result"
    finally:
        client.cancel_connection_attempt()
        client.disconnect(wait=0)


def cancel_pending_tasks(loop):
    """Cancel the tasks slixmpp leaves running, so Python does not warn about them at exit."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def main():
    if len(sys.argv) not in (3, 4):
        print(
            "usage: xmpp_login.py JID PORT [TIMEOUT_SECONDS] (password on stdin)",
            file=sys.stderr,
        )
        return EXIT_OTHER_ERROR
    jid = sys.argv[1]
    try:
        port = int(sys.argv[2])
        timeout_seconds = float(sys.argv[3]) if len(sys.argv) == 4 else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        print(f"invalid port or timeout: {sys.argv[2:]!r}", file=sys.stderr)
        return EXIT_OTHER_ERROR

    # The password stays bytes, so non-UTF-8 input is sent as it is.
    password = sys.stdin.buffer.read()
    slixmpp.util.sasl.client.saslprep = send_credentials_unchanged

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    client = LoginClient(jid, password)
    exit_status, message = client.loop.run_until_complete(log_in(client, port, timeout_seconds))
    cancel_pending_tasks(client.loop)
    print(message, file=sys.stderr)
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
