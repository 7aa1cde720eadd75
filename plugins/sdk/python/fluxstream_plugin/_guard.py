"""Keeps stdout clean until the handshake."""

import os

from . import _wire

real_stdout_fd = None


def install():
    """Point fd 1 at stderr, keeping the real stdout for the handshake.

    Only when fluxstream started the program (its magic cookie is set).
    """
    global real_stdout_fd
    if real_stdout_fd is not None or not os.environ.get(_wire.MAGIC_COOKIE_KEY):
        return
    try:
        fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        return
    os.set_inheritable(fd, False)
    real_stdout_fd = fd


def handshake(line):
    """Write the handshake line where fluxstream reads it."""
    data = (line + "\n").encode()
    fd = real_stdout_fd if real_stdout_fd is not None else 1
    while data:
        n = os.write(fd, data)
        data = data[n:]
