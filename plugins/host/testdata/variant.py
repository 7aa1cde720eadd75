"""The Python webhook example made to misbehave through its environment,
for the conformance tests (the same variables as testdata/variant):

FXS_VARIANT_PROTOCOL=N   speak plugin protocol N
FXS_VARIANT_CHATTY=1     print to stdout at start and in every write
"""

import os
import sys

import fluxstream_plugin as fp
from fluxstream_plugin import _wire

if os.environ.get("FXS_VARIANT_PROTOCOL"):
    _wire.PROTOCOL_VERSION = int(os.environ["FXS_VARIANT_PROTOCOL"])

example = os.path.join(os.path.dirname(__file__), "..", "..", "sdk", "python", "examples")
sys.path.insert(0, example)
import webhook_sink  # noqa: E402

chatty = bool(os.environ.get("FXS_VARIANT_CHATTY"))
if chatty:
    print("chatty plugin: hello from init, on stdout", flush=True)


class Variant(webhook_sink.WebhookSink):
    def write(self, records):
        if chatty:
            print("chatty plugin: writing %d records, on stdout" % len(records), flush=True)
        return super().write(records)


fp.serve_sink(Variant())
