"""Why a site is not in the federation: the server's port does not answer, the TLS handshake failed,
the server refused the node key, or nothing happened within the join timeout.

A SuperNode retries an unreachable or plaintext-refusing server for ever and exits on a bad
certificate or an unknown key; `fedseg site` gives up after its join timeout either way and says
which of these it was, from the port and the SuperNode's log.
"""

from __future__ import annotations

import socket

from federation.processes import FlowerProcessError, last_error_line

UNREACHABLE = "unreachable"
TLS_MISMATCH = "tls"
KEY_REFUSED = "key-refused"
TIMEOUT = "timeout"
_KEY_WORDS = ("unauthenticated", "permission_denied", "public key")
_TLS_WORDS = ("ssl", "tls", "certificate")


class JoinError(FlowerProcessError):
    """The site could not join; `reason` is one of the codes above (it goes into the site's events)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT (an IPv6 host may be bracketed); ValueError when it is not one."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the server address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def port_problem(address: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to HOST:PORT opens, else why not, in a few lower-case words."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()


def diagnose(address: str, tls_enabled: bool, supernode_log: str, waited: float | None = None) -> JoinError:
    """The JoinError for a site that is not in: from the SuperNode's log first, then the server's port.
    `waited` is how long the site tried (None: the SuperNode gave up by itself)."""
    text = supernode_log.lower()
    if any(word in text for word in _KEY_WORDS):
        return JoinError(KEY_REFUSED, f"{address} refused this site's node key (is its public key in the "
                                      "server's [auth] site_public_keys?)")
    if any(word in text for word in _TLS_WORDS):
        reason = last_error_line(supernode_log)
        return JoinError(TLS_MISMATCH, f"the TLS handshake with {address} failed: {reason} (is the CA "
                                       "certificate the federation's?)")
    if (problem := port_problem(address)) is not None:
        return JoinError(UNREACHABLE, f"{address} does not answer ({problem}); is the server running and the "
                                      "address right?")
    if not tls_enabled:
        return JoinError(TLS_MISMATCH, f"{address} answers but did not take an unencrypted connection: the "
                                       "server probably uses TLS; give its CA certificate")
    after = f" within {waited:.0f} s" if waited is not None else ""
    return JoinError(TIMEOUT, f"{address} answers but did not accept this site{after} "
                              f"({last_error_line(supernode_log)})")
