// Sends log records to the gateway's /v1/logs the way a Node.js service does: the
// OpenTelemetry JavaScript SDK (LoggerProvider → BatchLogRecordProcessor → OTLPLogExporter,
// OTLP/JSON over HTTP). Run from the node_modules test-otlp.sh installs.
//   node sdk_js.mjs URL COUNT RUN_ID
// Prints one JSON line (records sent, seconds) for test-otlp.sh to check.
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';

const [url, countArg, run] = process.argv.slice(2);
if (!url || !countArg || !run) {
  console.error('usage: node sdk_js.mjs URL COUNT RUN_ID');
  process.exit(2);
}
const count = Number(countArg);
const exporter = new OTLPLogExporter({ url });
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': `js-${run}` }),
  // A queue that holds the whole run: the SDK drops records when its queue is full.
  processors: [new BatchLogRecordProcessor(exporter, { maxQueueSize: Math.max(2048, count), maxExportBatchSize: 512 })],
});
const logger = provider.getLogger('otlp-test-js', '1.0.0');
const levels = [
  [SeverityNumber.DEBUG, 'DEBUG'], [SeverityNumber.INFO, 'INFO'], [SeverityNumber.WARN, 'WARN'],
  [SeverityNumber.ERROR, 'ERROR'], [SeverityNumber.FATAL, 'FATAL'],
];
const started = Date.now();
for (let i = 0; i < count; i++) {
  const [severityNumber, severityText] = levels[i % levels.length];
  logger.emit({
    severityNumber,
    severityText,
    body: `js record ${i} of ${run}`,
    attributes: { run, seq: i, 'http.route': '/checkout' },
  });
}
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ sent: count, seconds: (Date.now() - started) / 1000 }));
