// `payment` as version 2, the same code: what runtime/tests/sagas.rs deploys
// halfway through a run to check that a new version replays history without
// emitting again (built as dist/payment-js-v2.wasm).
import { defineReactor } from "../../lib-js/reactor.js";
import { payment } from "./payment.js";

export const { describe, describeEmits, setup, handle, query } = defineReactor({
  ...payment,
  manifest: { ...payment.manifest, version: "2" },
});
