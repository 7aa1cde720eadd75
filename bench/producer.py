"""Baseline for the Kafka leg: a plain confluent-kafka (librdkafka) producer
of the journal's events, one JSON message per event, key = job id, acks=all,
idempotence on, and fluxstream's kafka sink defaults where librdkafka has
the same knob (lz4, 5 ms linger, 100000 messages queued). Every delivery
report is checked.

usage: producer.py JOURNAL BROKERS TOPIC   (prints the number delivered)
"""
import json
import sys

from confluent_kafka import Producer


def main():
    src, brokers, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(err)

    p = Producer({
        "bootstrap.servers": brokers,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "queue.buffering.max.messages": 100000,
    })
    n = 0
    with open(src, "rb") as f:
        for line in f:
            resp = json.loads(line)
            jobid = resp.get("id")
            if jobid is None or jobid < 0:
                continue
            key = str(jobid)
            for ev in resp["events"]:
                value = json.dumps({"id": jobid, "event": ev})
                while True:
                    try:
                        p.produce(topic, value, key, on_delivery=report)
                        break
                    except BufferError:
                        p.poll(0.05)  # queue full: wait for deliveries
                p.poll(0)
                n += 1
    left = p.flush(120)
    if left or failed:
        sys.exit("undelivered: %d, failed: %d (first: %s)" % (left, len(failed), failed[:1]))
    print(n)


if __name__ == "__main__":
    main()
