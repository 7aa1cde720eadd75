"""fluxstream_plugin: write fluxstream sink plugins in Python.

    import fluxstream_plugin as fp

    class MySink(fp.Sink):
        def info(self):
            return fp.Info(name="mysink", version="0.1.0", summary="...")
        def configure(self, config):
            self.url = config.data["url"]
        def write(self, records):
            for r in records:
                send(r.json)            # r.id is the idempotency key

    if __name__ == "__main__":
        fp.serve_sink(MySink())

See README.md. Importing this module while fluxstream starts the program
points file descriptor 1 at stderr, so that nothing printed can break the
go-plugin handshake; serve_sink writes the handshake to the real stdout.
"""

from ._guard import install as _install_guard

_install_guard()

from ._types import (  # noqa: E402
    BatchError,
    Config,
    ConfigError,
    ConfigErrors,
    Encoded,
    Info,
    Permanent,
    Record,
    Sink,
)
from ._serve import logger, serve_sink  # noqa: E402
from ._wire import PROTOCOL_VERSION  # noqa: E402

__all__ = [
    "BatchError",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "Encoded",
    "Info",
    "Permanent",
    "Record",
    "Sink",
    "logger",
    "serve_sink",
    "PROTOCOL_VERSION",
]
__version__ = "1.0.0"
