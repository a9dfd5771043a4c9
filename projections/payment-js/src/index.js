// The `payment` reactor's component (see payment.js).
import { defineReactor } from "../../lib-js/reactor.js";
import { payment } from "./payment.js";

export const { describe, describeEmits, setup, handle, query } = defineReactor(payment);
