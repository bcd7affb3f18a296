// sqs-consumer's batch handler against the benchmark queue; prints one JSON line about itself.
"use strict";
const { Consumer } = require("sqs-consumer");
const { SQSClient } = require("@aws-sdk/client-sqs");

const [queueUrl, expectArg, latencyArg, timeoutArg] = process.argv.slice(2);
const expect = Number(expectArg);
const measureLatency = latencyArg === "1";
const timeoutMs = Number(timeoutArg || "240") * 1000;
const latencies = [];
let count = 0;

const sqs = new SQSClient({
  endpoint: process.env.AWS_ENDPOINT_URL_SQS,
  region: process.env.AWS_REGION,
  credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
});
const cpuStart = process.cpuUsage();
const started = process.hrtime.bigint();

function finish(code) {
  const cpu = process.cpuUsage(cpuStart);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const report = {
    records: count,
    seconds,
    cpu: (cpu.user + cpu.system) / 1e6,
    max_rss_mb: process.resourceUsage().maxRSS / 1024,
    latencies,
  };
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
}

const consumer = Consumer.create({
  queueUrl,
  sqs,
  batchSize: 10,
  handleMessageBatch: async (messages) => {
    const now = Date.now() / 1000;
    if (measureLatency) {
      for (const m of messages) {
        try {
          const t = JSON.parse(m.Body).t;
          if (t !== undefined) latencies.push(now - t);
        } catch (e) { /* not a latency probe */ }
      }
    }
    count += messages.length;
    if (count >= expect) setImmediate(() => { consumer.stop(); finish(0); });
    return messages;
  },
});
consumer.on("error", (err) => process.stderr.write(String(err) + "\n"));
setTimeout(() => finish(1), timeoutMs).unref();
consumer.start();
