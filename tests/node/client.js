// A Node.js client of the streamsight gateway (the README shows the same calls).
// Usage: node client.js ADDRESS STREAM_ID SOURCE EVENT_COUNT
// Prints one JSON line per step: the StartStream outcome, the listed stream ids, the events seen.
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const [address, streamId, source, eventCount] = process.argv.slice(2);
const protoRoot = path.resolve(__dirname, "../../protos");
const definition = loader.loadSync("streamsight/gateway/v1/gateway.proto", {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const api = grpc.loadPackageDefinition(definition).streamsight.gateway.v1;
const client = new api.StreamSight(address, grpc.credentials.createInsecure());
const say = (obj) => console.log(JSON.stringify(obj));

client.StartStream({ source, stream_id: streamId }, (err, stream) => {
  say(err ? { start: { code: grpc.status[err.code], details: err.details } } : { start: { state: stream.state } });
  client.ListStreams({}, (err2, reply) => {
    if (err2) throw err2;
    say({ streams: reply.streams.map((s) => s.id) });
    const call = client.WatchEvents({ stream_id: streamId, after_sequence: "0" });
    const seen = [];
    call.on("data", (event) => {
      seen.push({ sequence: event.sequence, type: event.type, [event.payload]: event[event.payload] });
      if (seen.length >= Number(eventCount)) {
        say({ events: seen });
        call.cancel();
        process.exit(0);
      }
    });
    call.on("error", (e) => {
      if (e.code !== grpc.status.CANCELLED) {
        say({ watch_error: e.details });
        process.exit(1);
      }
    });
  });
});
setTimeout(() => { say({ timeout: true }); process.exit(2); }, 20000);
