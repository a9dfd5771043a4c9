// The `billing` reactor's component (see billing.js).
import { defineReactor } from "../../lib-js/reactor.js";
import { billing } from "./billing.js";

export const { describe, describeEmits, setup, handle, query } = defineReactor(billing);
