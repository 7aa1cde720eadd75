"""serve_sink: the go-plugin handshake, the gRPC services, the parent watch."""

import base64
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from concurrent import futures

import grpc

from . import _guard, _tls, _wire
from ._proto import controller_pb2, controller_pb2_grpc, health_pb2, health_pb2_grpc
from ._proto.fluxstream.sink.v1 import sink_pb2, sink_pb2_grpc
from ._types import BatchError, Config, ConfigError, ConfigErrors, Encoded, Permanent, Record

logger = logging.getLogger("fluxstream_plugin")

_OK = sink_pb2.STATUS_OK
_RETRY = sink_pb2.STATUS_RETRY
_PERMANENT = sink_pb2.STATUS_PERMANENT


class _JSONFormatter(logging.Formatter):
    """One JSON object per line, the shape fluxstream re-logs (level, msg)."""

    _skip = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record):
        out = {"level": record.levelname, "msg": record.getMessage(), "logger": record.name}
        for k, v in record.__dict__.items():
            if k not in self._skip:
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out)


def _setup_logging():
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(_JSONFormatter())
        root.addHandler(h)
        root.setLevel(logging.INFO)


class _SinkService(sink_pb2_grpc.SinkServicer):
    def __init__(self, sink):
        self.sink = sink
        self.lock = threading.Lock()

    def Describe(self, request, context):
        info = self.sink.info()
        return sink_pb2.DescribeResponse(
            name=info.name,
            version=info.version,
            summary=info.summary,
            config_schema=info.config_schema,
            protocol_version=_wire.PROTOCOL_VERSION,
        )

    def Configure(self, request, context):
        errors = []
        try:
            self.sink.configure(Config(request.node, request.cluster, request.config_json))
        except ConfigErrors as e:
            errors = [sink_pb2.ConfigError(key=x.key, message=x.message) for x in e.errors]
        except ConfigError as e:
            errors = [sink_pb2.ConfigError(key=e.key, message=e.message)]
        except Exception as e:  # anything else is about the whole mapping
            errors = [sink_pb2.ConfigError(key="", message="%s: %s" % (type(e).__name__, e))]
        return sink_pb2.ConfigureResponse(errors=errors)

    def Write(self, request, context):
        recs = []
        for r in request.records:
            enc = None
            if r.HasField("encoded"):
                e = r.encoded
                enc = Encoded(e.format, e.value, e.schema_id, dict(e.headers))
            recs.append(Record(r.id, r.key, r.kind, r.event, r.json, enc))
        with self.lock:
            try:
                result = self.sink.write(recs)
            except BatchError as be:
                result = be
            except Permanent as e:
                st = sink_pb2.RecordStatus(status=_PERMANENT, reason=str(e) or type(e).__name__)
                return sink_pb2.WriteResponse(statuses=[st] * len(recs))
            except Exception as e:
                logger.warning("write failed; the batch is retried", extra={"error": repr(e)})
                st = sink_pb2.RecordStatus(status=_RETRY, reason="%s: %s" % (type(e).__name__, e))
                return sink_pb2.WriteResponse(statuses=[st] * len(recs))
        ok = sink_pb2.RecordStatus(status=_OK)
        if not isinstance(result, BatchError) or not result.failed:
            return sink_pb2.WriteResponse(statuses=[ok] * len(recs))
        statuses = []
        for i in range(len(recs)):
            f = result.failed.get(i)
            if f is None:
                statuses.append(ok)
            else:
                statuses.append(sink_pb2.RecordStatus(status=_PERMANENT if f[0] else _RETRY, reason=f[1]))
        return sink_pb2.WriteResponse(statuses=statuses)

    def Flush(self, request, context):
        with self.lock:
            self.sink.flush()
        return sink_pb2.FlushResponse()

    def Health(self, request, context):
        try:
            msg = self.sink.health()
        except Exception as e:
            return sink_pb2.HealthResponse(ok=False, message=str(e) or type(e).__name__)
        return sink_pb2.HealthResponse(ok=True, message=msg or "ok")

    def Close(self, request, context):
        with self.lock:
            self.sink.close()
        return sink_pb2.CloseResponse()


class _Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in ("", _wire.HEALTH_SERVICE):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)


class _Controller(controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, stop):
        self.stop = stop

    def Shutdown(self, request, context):
        threading.Thread(target=self.stop, daemon=True).start()
        return controller_pb2.Empty()


def _server_cert():
    """A fresh self-signed certificate for AutoMTLS: (cert PEM, key PEM, DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fluxstream plugin"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem, cert.public_bytes(serialization.Encoding.DER)


def _set_pdeathsig():
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _watch_parent():
    """Exit when fluxstream dies: PR_SET_PDEATHSIG on Linux, and a poll of
    the parent pid and of the host pid fluxstream passed."""
    _set_pdeathsig()
    ppid = os.getppid()
    try:
        host = int(os.environ.get(_wire.ENV_HOST_PID, "0"))
    except ValueError:
        host = 0

    def gone():
        if os.getppid() != ppid or ppid == 1:
            return True
        if host > 0:
            try:
                os.kill(host, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return False

    def loop():
        while True:
            if gone():
                sys.stderr.write("fluxstream plugin: fluxstream is gone; exiting\n")
                sys.stderr.flush()
                os._exit(3)
            time.sleep(0.2)

    if gone():
        sys.stderr.write("fluxstream plugin: the fluxstream process that started this plugin is gone; exiting\n")
        os._exit(3)
    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def serve_sink(sink):
    """Serve `sink` to fluxstream until it stops the plugin."""
    if os.environ.get(_wire.MAGIC_COOKIE_KEY) != _wire.MAGIC_COOKIE_VALUE:
        sys.stderr.write(
            "This is a fluxstream sink plugin (magic cookie %s missing or wrong): it is started by "
            "fluxstream (sink type `plugin`), not by hand. Try: fluxstream plugins check %s\n"
            % (_wire.MAGIC_COOKIE_KEY, sys.argv[0]))
        sys.exit(1)
    _setup_logging()
    _watch_parent()

    versions = [v for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",") if v]
    if versions and str(_wire.PROTOCOL_VERSION) not in versions:
        logger.error("fluxstream speaks plugin protocol %s, this plugin %d", ",".join(versions), _wire.PROTOCOL_VERSION)

    opts = [("grpc.max_receive_message_length", _wire.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _wire.MAX_MESSAGE_BYTES)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=opts)
    done = threading.Event()

    def stop():
        server.stop(grace=2).wait()
        done.set()

    sink_pb2_grpc.add_SinkServicer_to_server(_SinkService(sink), server)
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    controller_pb2_grpc.add_GRPCControllerServicer_to_server(_Controller(stop), server)

    sockdir = tempfile.mkdtemp(prefix="fxs-plugin-", dir=os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or None)
    path = os.path.join(sockdir, "plugin.sock")
    cert_field = ""
    client_cert = os.environ.get("PLUGIN_CLIENT_CERT")
    if client_cert:
        # AutoMTLS: gRPC in plaintext on a private socket, TLS in front
        # of it (see _tls.py for why not gRPC's own TLS).
        cert_pem, key_pem, der = _server_cert()
        inner = os.path.join(sockdir, "grpc.sock")
        server.add_insecure_port("unix:" + inner)
        _tls.serve(_tls.context(cert_pem, key_pem, client_cert, sockdir), path, inner)
        cert_field = base64.b64encode(der).decode().rstrip("=")
    else:
        server.add_insecure_port("unix:" + path)
    server.start()

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # fluxstream stops us in order
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=stop, daemon=True).start())
    _guard.handshake("%d|%d|unix|%s|grpc|%s" % (_wire.CORE_PROTOCOL_VERSION, _wire.PROTOCOL_VERSION, path, cert_field))
    try:
        while not done.wait(1.0):
            pass
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
