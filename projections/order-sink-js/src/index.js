// `order-sink-js`: the seed's order events delivered to RabbitMQ through a
// transform written in JavaScript. Each order event becomes one message on
// the `amq.topic` exchange with the routing key `orders.{stream_id}`: a
// compact JSON body naming the event, and an `X-Order-Event` header. An
// `order.placed` event with several lines makes one more message per line,
// routed to `order-lines.{stream_id}` (their dedup ids are
// `order-sink-js:position:index`). Events of other types make none.
//
// Deploy it with `reel serve --amqp-url amqp://guest:guest@127.0.0.1:5672/%2f`
// and a queue bound to `amq.topic` with `orders.#` (and `order-lines.#`):
// a message no queue takes is not confirmed, and the sink retries it.

import { defineSink, invalidEvent } from "../../lib-js/sink.js";

export const { describeSink, transform } = defineSink({
  manifest: {
    name: "order-sink-js",
    version: "1",
    broker: "amqp",
    exchange: "amq.topic",
    subject: "orders.{stream_id}",
    eventTypes: ["order.*"],
  },
  transform(event) {
    const data = event.data;
    if (data === null || typeof data !== "object") throw invalidEvent(`\`${event.eventType}\`: data is not an object`);
    const message = {
      headers: { "X-Order-Event": event.eventType },
      body: { event: event.eventType, order: event.streamId, version: event.version, data },
    };
    const lines = event.eventType === "order.placed" && Array.isArray(data.lines) ? data.lines : [];
    if (lines.length < 2) return message;
    return [
      message,
      ...lines.map((line, i) => ({
        subject: `order-lines.${event.streamId}`,
        headers: { "X-Order-Line": String(i) },
        body: { order: event.streamId, line },
      })),
    ];
  },
});
