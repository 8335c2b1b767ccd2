#!/usr/bin/env python3
"""Sends log records to the gateway's /v1/logs the way a Python service does: the standard
logging module, bridged by the OpenTelemetry SDK (LoggingHandler → BatchLogRecordProcessor →
OTLPLogExporter, protobuf over HTTP). Run inside the venv test-otlp.sh makes.

  sdk_python.py sdk URL --count N --run ID [--gzip]        N records; every 5th in a span
  sdk_python.py raw URL --run ID [--throttled-url U]     hand-built exports: partial success,
                                                           the same export twice, bad bodies,
                                                           429 + Retry-After from U
Prints one JSON line of what it did (and what the exporter saw) for test-otlp.sh to check."""
import argparse, json, logging, sys, time, urllib.error, urllib.request


def sdk(a):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    statuses = []  # what the exporter got back, through its own logger's warnings
    class Seen(logging.Handler):
        def emit(self, record):
            statuses.append(record.getMessage())
    logging.getLogger("opentelemetry.exporter").addHandler(Seen())

    provider = LoggerProvider(resource=Resource.create({"service.name": f"py-{a.run}"}))
    # A queue that holds the whole run: the SDK drops records when its queue (2048) is full.
    provider.add_log_record_processor(BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=a.url, timeout=a.timeout, compression=Compression.Gzip if a.gzip else None),
        max_queue_size=max(2048, a.count)))
    log = logging.getLogger(f"otlp.test.{a.run}")
    log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
    log.setLevel(logging.DEBUG)
    log.propagate = False
    tracer = TracerProvider().get_tracer("otlp-test")
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    traced = {}
    started = time.time()
    for i in range(a.count):
        extra = {"run": a.run, "seq": i}
        if i % 5 == 0:
            with tracer.start_as_current_span("work") as span:
                log.log(levels[i % 5], "python record %d of %s", i, a.run, extra=extra)
                traced[i] = format(span.get_span_context().trace_id, "032x")
        else:
            log.log(levels[i % 5], "python record %d of %s", i, a.run, extra=extra)
    ok = provider.force_flush(int(a.timeout * 1000 * 4))
    provider.shutdown()
    retries = [s for s in statuses if "retrying" in s]
    print(json.dumps({"sent": a.count, "flushed": ok, "seconds": round(time.time() - started, 1),
                      "retries": len(retries), "retry_lines": retries[:3],
                      "errors": [s for s in statuses if "retrying" not in s][:5],
                      "trace_of_0": traced.get(0)}))


def post(url, body, content_type="application/x-protobuf"):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def raw(a):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest, ExportLogsServiceResponse)
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    now = time.time_ns()

    def export(bodies):
        recs = []
        for i, body in enumerate(bodies):
            r = LogRecord(time_unix_nano=now + i, severity_number=9, severity_text="INFO",
                          attributes=[KeyValue(key="seq", value=AnyValue(int_value=i))])
            if body is not None:
                r.body.CopyFrom(AnyValue(string_value=body))
            recs.append(r)
        return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=f"raw-{a.run}"))]),
            scope_logs=[ScopeLogs(log_records=recs)])]).SerializeToString()

    out = {}
    # 1. Partial success: 7 good records, 3 the gateway cannot store (NUL, empty body, 40 KiB).
    bodies = [f"partial {a.run} {i}" for i in range(7)] + ["nul \0 inside", None, "x" * 40_000]
    status, _, body = post(a.url, export(bodies))
    resp = ExportLogsServiceResponse()
    resp.ParseFromString(body)
    out["partial"] = {"status": status, "rejected": resp.partial_success.rejected_log_records,
                      "message": resp.partial_success.error_message}
    # 2. The same export twice (an exporter's retry): 5 records, each must be stored once.
    again = export([f"twice {a.run} {i}" for i in range(5)])
    out["twice"] = [post(a.url, again)[0], post(a.url, again)[0]]
    # 3. Undecodable: 400 with a google.rpc.Status; JSON in, JSON out.
    status, headers, body = post(a.url, b"\xff\xff\xff\xff")
    out["garbage"] = {"status": status, "type": headers.get("Content-Type")}
    status, headers, body = post(a.url, b"{\"resourceLogs\": 5}", "application/json")
    out["bad_json"] = {"status": status, "type": headers.get("Content-Type"), "body": json.loads(body)}
    if a.throttled_url:  # 4. Throttled: 429 + Retry-After + a Status, before the body is read
        for _ in range(200):
            status, headers, body = post(a.throttled_url, export([f"burst {a.run}"] * 50))
            if status == 429:
                out["throttled"] = {"status": status, "retry_after": headers.get("Retry-After"),
                                    "type": headers.get("Content-Type"), "bytes": len(body)}
                break
        else:
            out["throttled"] = {"status": None}
    print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["sdk", "raw"])
    p.add_argument("url")
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--run", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--throttled-url")
    p.add_argument("--gzip", action="store_true", help="sdk: Content-Encoding: gzip")
    args = p.parse_args()
    sdk(args) if args.mode == "sdk" else raw(args)
