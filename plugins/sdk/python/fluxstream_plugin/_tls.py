"""Mutual TLS in front of the gRPC server, for go-plugin's AutoMTLS.

go-plugin's host signs its client certificate with ECDSA P-521. gRPC's
own TLS (BoringSSL) does not offer ecdsa_secp521r1_sha512 when it asks for
a client certificate, so a Go host finds its certificate unacceptable and
sends none: the handshake fails. Python's ssl module (OpenSSL) accepts it.
So the SDK serves gRPC in plaintext on a private socket and terminates
TLS here, on the socket it announces, requiring exactly the client
certificate fluxstream passed in PLUGIN_CLIENT_CERT.
"""

import os
import select
import socket
import ssl
import threading

from . import _wire


def context(cert_pem, key_pem, client_cert_pem, workdir):
    """The server TLS context: our certificate, the host's as the only CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    certfile = os.path.join(workdir, "cert.pem")
    keyfile = os.path.join(workdir, "key.pem")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    with open(certfile, "wb") as f:
        f.write(cert_pem)
    ctx.load_cert_chain(certfile, keyfile)
    os.unlink(keyfile)
    ctx.load_verify_locations(cadata=client_cert_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])  # gRPC clients insist on it
    return ctx


def serve(ctx, outer_path, inner_path):
    """Accept TLS connections on outer_path, relay each to inner_path."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(outer_path)
    os.chmod(outer_path, 0o600)
    lsock.listen(16)

    def accept():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=_relay, args=(ctx, conn, inner_path), daemon=True).start()

    threading.Thread(target=accept, name="tls-accept", daemon=True).start()
    return lsock


def _relay(ctx, conn, inner_path):
    try:
        tls = ctx.wrap_socket(conn, server_side=True)
    except (OSError, ssl.SSLError) as e:
        os.write(2, ("fluxstream plugin: TLS handshake with the host failed: %s\n" % e).encode())
        conn.close()
        return
    inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        inner.connect(inner_path)
        bufsize = 256 << 10
        inner.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        inner.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
        while True:
            ready = [tls] if tls.pending() else select.select([tls, inner], [], [])[0]
            if tls in ready:
                data = tls.recv(_wire.RELAY_CHUNK)
                if not data:
                    return
                inner.sendall(data)
            if inner in ready:
                data = inner.recv(_wire.RELAY_CHUNK)
                if not data:
                    return
                tls.sendall(data)
    except (OSError, ssl.SSLError):
        return
    finally:
        for s in (tls, inner):
            try:
                s.close()
            except OSError:
                pass
