//! `order-fulfillment`: the seed's orchestrated saga (its `SagaOrchestrator`
//! with the steps reserve-inventory, process-payment, create-shipment) as a
//! process manager: a reactor that keeps each saga's state in its read
//! model and sends requests that other modules answer.
//!
//! - on `order.placed` it starts a saga keyed by the event's correlation id
//!   and sends `fulfillment.reserve-requested`; `warehouse` answers
//!   `warehouse.reserved` or `warehouse.reservation-failed`;
//! - then `fulfillment.charge-requested`, with a durable timer: `billing`
//!   answers `billing.charged` or `billing.declined`, and if neither comes
//!   within [`PAYMENT_TIMEOUT_SECS`] of the reservation the timer's event
//!   `fulfillment.payment-timed-out` fails the step;
//! - then `fulfillment.ship-requested`: `carrier` answers `carrier.shipped`
//!   or `carrier.shipment-failed`;
//! - when a step fails, the completed steps are compensated one after the
//!   other in reverse order (`fulfillment.cancel-shipment-requested`,
//!   `.refund-requested`, `.release-requested`, each sent once the one
//!   before is answered), then `fulfillment.failed`; all done is
//!   `fulfillment.completed`. An `order.cancelled` on the order's stream
//!   compensates what is done (also after completion) and ends in
//!   `fulfillment.cancelled`. A charge answered after the timeout is refunded.
//!
//! Everything it emits goes to `fulfillment-{orderId}` with the order id in
//! the data; reel carries the saga's correlation id in the metadata of
//! every request, answer and timer event. Its read model (KV):
//! `saga/{correlation id}` the state and history of each saga,
//! `order/{orderId}` the saga key of an order, `alias/{correlation id}` the
//! saga of a cancellation's correlation, `outcomes` counts by status
//! and outcome. Queries: `saga` (`{"orderId": ...}` or `{"saga": ...}`),
//! `sagas` (a page of summaries: `{"after", "limit", "status"}`), `outcomes`.

pub mod saga;

/// The version in the manifest.
const VERSION: &str = "1";

include!("manager.rs");
