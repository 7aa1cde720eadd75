"""What the host and the SDKs agree on besides the generated protocol.

The Go side is plugins/internal/wire/wire.go; a test checks they match.
"""

# The sink plugin protocol version (go-plugin's application protocol
# version; the proto package is fluxstream.sink.v1).
PROTOCOL_VERSION = 1

# go-plugin's core protocol version (the first field of the handshake line).
CORE_PROTOCOL_VERSION = 1

MAGIC_COOKIE_KEY = "FLUXSTREAM_PLUGIN"
MAGIC_COOKIE_VALUE = "sink-2b0e6f3c9d1a4e57"

# The host's pid, so that the plugin exits when fluxstream dies.
ENV_HOST_PID = "FLUXSTREAM_PLUGIN_HOST_PID"

# One gRPC message either way.
MAX_MESSAGE_BYTES = 64 << 20

# The name go-plugin's health check asks about.
HEALTH_SERVICE = "plugin"

# How much the TLS relay moves at a time.
RELAY_CHUNK = 256 << 10
