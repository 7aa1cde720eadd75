#!/usr/bin/env python3
"""Example fluxstream sink plugin: POSTs each batch as NDJSON to a URL.

The same behaviour as the Go example (plugins/examples/webhook):
2xx = delivered; 408, 429, 5xx and network errors = retry the batch; other
4xx = refused for good (dead-lettered); 207 = one JSON line per record it
names, {"id":..., "status":N, "reason":"..."}, judged the same way.

config:
  url: http://host:port/path     (required)
  timeout: 30                    (seconds per POST, or "10s")
  headers: {Name: value}
"""

import http.client
import json
import urllib.parse

import fluxstream_plugin as fp

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "url": {"type": "string"},
        "timeout": {"type": ["string", "number"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def judge(code, why):
    """None when delivered, else (permanent, reason)."""
    if 200 <= code < 300:
        return None
    if code in (408, 429) or code >= 500:
        return (False, "HTTP %d: %s" % (code, why))
    return (True, "HTTP %d: %s" % (code, why))


class WebhookSink(fp.Sink):
    def __init__(self):
        self.conn = None

    def info(self):
        return fp.Info(name="webhook-py", version="1.0.0",
                       summary="POSTs batches of records as NDJSON to a URL (Python)", config_schema=SCHEMA)

    def configure(self, config):
        c = config.data
        errors = []
        for k in c:
            if k not in ("url", "timeout", "headers"):
                errors.append(fp.ConfigError(k, "unknown key"))
        u = urllib.parse.urlsplit(str(c.get("url", "")))
        if u.scheme not in ("http", "https") or not u.netloc:
            errors.append(fp.ConfigError("url", "want an http:// or https:// URL, got %r" % c.get("url", "")))
        t = c.get("timeout", 30)
        try:
            self.timeout = float(t[:-1]) if isinstance(t, str) and t.endswith("s") else float(t)
            if self.timeout <= 0:
                raise ValueError
        except (TypeError, ValueError):
            errors.append(fp.ConfigError("timeout", "want seconds or a duration like 10s, got %r" % (t,)))
        if errors:
            raise fp.ConfigErrors(errors)
        self.url = u
        self.path = (u.path or "/") + ("?" + u.query if u.query else "")
        self.headers = {"Content-Type": "application/x-ndjson"}
        self.headers.update(c.get("headers") or {})

    def _connection(self):
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
            self.conn = cls(self.url.netloc, timeout=self.timeout)
        return self.conn

    def write(self, records):
        body = b"\n".join(r.json for r in records) + b"\n"
        try:
            conn = self._connection()
            conn.request("POST", self.path, body=body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            raise RuntimeError("POST %s: %s" % (self.url.geturl(), e))  # retried
        if resp.status == 207:
            return self._per_record(records, data)
        verdict = judge(resp.status, data[:200].decode("utf-8", "replace").strip())
        if verdict is None:
            return None
        if verdict[0]:
            raise fp.Permanent(verdict[1])
        raise RuntimeError(verdict[1])

    def _per_record(self, records, data):
        index = {}
        for i, r in enumerate(records):
            index.setdefault(r.id, []).append(i)
        be = fp.BatchError()
        for line in data.splitlines():
            line = line.strip()
            if not line:
                continue
            item = json.loads(line)
            verdict = judge(int(item["status"]), item.get("reason", ""))
            if verdict is None:
                continue
            for i in index.get(item["id"], []):
                if verdict[0]:
                    be.permanent(i, verdict[1])
                else:
                    be.retry(i, verdict[1])
        return be

    def health(self):
        return "posting to %s" % self.url.geturl()

    def close(self):
        if self.conn is not None:
            self.conn.close()


if __name__ == "__main__":
    fp.serve_sink(WebhookSink())
