"""The plain types a plugin author works with."""

import json


class Record:
    """One record to deliver.

    id: idempotency key, stable across restarts (write by it, so that a
        redelivery overwrites instead of duplicating)
    key: partition / upsert key, the decimal job id
    kind: "event", "purge" or "invalid"
    event: the event name, or the kind for other records
    json: the record's JSON form as bytes (schemas/record.md)
    encoded: an Encoded when an encoder transform (avro) ran, else None
    """

    __slots__ = ("id", "key", "kind", "event", "json", "encoded")

    def __init__(self, id, key="", kind="", event="", json=b"", encoded=None):
        self.id = id
        self.key = key
        self.kind = kind
        self.event = event
        self.json = json
        self.encoded = encoded

    def data(self):
        """The JSON form decoded into Python values."""
        return json.loads(self.json)

    def __repr__(self):
        return "Record(id=%r, kind=%r, event=%r)" % (self.id, self.kind, self.event)


class Encoded:
    """A record already turned into bytes by an encoder transform."""

    __slots__ = ("format", "value", "schema_id", "headers")

    def __init__(self, format, value, schema_id=0, headers=None):
        self.format = format
        self.value = value
        self.schema_id = schema_id
        self.headers = headers or {}


class Info:
    """What the plugin is (shown by `fluxstream plugins`)."""

    def __init__(self, name, version, summary="", config_schema=""):
        self.name = name
        self.version = version
        self.summary = summary
        # JSON Schema of the node's config: mapping, as JSON text (or a dict)
        self.config_schema = config_schema if isinstance(config_schema, str) else json.dumps(config_schema)


class Config:
    """The node's config: mapping."""

    def __init__(self, node, cluster, raw):
        self.node = node
        self.cluster = cluster
        self.json = raw or b"{}"
        self.data = json.loads(self.json) if self.json.strip() else {}


class ConfigError(Exception):
    """A problem with one key of the config (key "" = the whole mapping)."""

    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message) if key else message)
        self.key = key
        self.message = message


class ConfigErrors(Exception):
    """Several ConfigErrors at once."""

    def __init__(self, errors):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = list(errors)


class Permanent(Exception):
    """Raise (or wrap) for a failure that retrying cannot fix: the records go
    to fluxstream's dead-letter file with the reason."""


class BatchError(Exception):
    """Per-record outcomes of a write: return it, or raise it. Records not
    named were delivered."""

    def __init__(self):
        super().__init__("some records failed")
        self.failed = {}

    def retry(self, index, reason):
        """Record `index` was not delivered: fluxstream retries it."""
        self.failed[index] = (False, str(reason))

    def permanent(self, index, reason):
        """Record `index` is refused for good: it is dead-lettered."""
        self.failed[index] = (True, str(reason))

    def __bool__(self):
        return bool(self.failed)


class Sink:
    """Base class of a sink plugin. Override info, configure and write;
    flush, health and close are optional."""

    def info(self):
        raise NotImplementedError

    def configure(self, config):
        """Check and take the config; raise ConfigError(s) to refuse it."""

    def write(self, records):
        """Deliver a batch (a list of Record). Return None when every record
        was delivered; raise to retry the batch (Permanent to dead-letter
        it); return or raise a BatchError for per-record outcomes. Not
        called concurrently."""
        raise NotImplementedError

    def flush(self):
        """Push out anything held between writes."""

    def health(self):
        """Return None (or a short state string) when the sink can deliver;
        raise to say what is wrong."""

    def close(self):
        """Release resources."""
