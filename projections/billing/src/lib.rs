//! `billing`: a participant of the `order-fulfillment` saga. It answers
//! the manager's requests on `billing-{orderId}` (reel carries the saga's
//! correlation id on), with deterministic rules so that a history has every
//! outcome:
//!
//! - `fulfillment.charge-requested` `{"orderId", "customerId", "amount"}`:
//!   no answer at all when the amount's whole part ends in
//!   [`SILENT_DIGIT`] (the bank never answers: the saga's payment timeout
//!   fires); `billing.declined` when the amount is over [`LIMIT_CENTS`];
//!   else `billing.charged` with a `paymentId`;
//! - `fulfillment.refund-requested` `{"orderId", "paymentId", "amount"}`
//!   (the compensation): `billing.refunded`.
//!
//! Its read model (KV): `payment/{orderId}` each payment's state, `ledger`
//! the cents charged and refunded.

use reel_guest_sdk::serde_json::json;
use reel_guest_sdk::{Context, Emits, Envelope, Manifest, Projection, Reactor, Result};
use serde::{Deserialize, Serialize};

/// A charge whose whole part ends in this digit is never answered.
pub const SILENT_DIGIT: i64 = 7;
/// A charge over this many cents is declined.
pub const LIMIT_CENTS: i64 = 40_000;

/// A charge or refund request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub order_id: String,
    #[serde(default)]
    pub payment_id: Option<String>,
    pub amount: f64,
}

/// The requests it answers.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "fulfillment.charge-requested")]
    Charge(Request),
    #[serde(rename = "fulfillment.refund-requested")]
    Refund(Request),
}

/// Cents charged and refunded, over all orders.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub charged: i64,
    pub refunded: i64,
}

/// The participant.
pub struct Billing;

/// Whether a charge of `amount` goes unanswered.
pub fn silent(amount: f64) -> bool {
    cents(amount) / 100 % 10 == SILENT_DIGIT
}

fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

fn book(ctx: &mut Context<'_>, charged: i64, refunded: i64) -> Result<()> {
    let mut ledger: Ledger = ctx.kv().get_json("ledger")?.unwrap_or_default();
    ledger.charged += charged;
    ledger.refunded += refunded;
    ctx.kv().set_json("ledger", &ledger)
}

impl Projection for Billing {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("billing", "1").event_types(["fulfillment.charge-requested", "fulfillment.refund-requested"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let cause = event.position;
        match event.data {
            Event::Charge(r) => {
                let stream = format!("billing-{}", r.order_id);
                let key = format!("payment/{}", r.order_id);
                let amount = cents(r.amount);
                if silent(r.amount) {
                    return ctx.kv().set_json(&key, &json!({ "status": "unanswered", "cents": amount }));
                }
                if amount > LIMIT_CENTS {
                    ctx.kv().set_json(&key, &json!({ "status": "declined", "cents": amount }))?;
                    let reason = format!("{:.2} is over the {:.2} limit", r.amount, LIMIT_CENTS as f64 / 100.0);
                    return ctx.emit(
                        cause,
                        &stream,
                        "billing.declined",
                        &json!({ "orderId": r.order_id, "reason": reason }),
                    );
                }
                let payment_id = format!("pay-{}", r.order_id);
                ctx.kv().set_json(&key, &json!({ "status": "charged", "cents": amount, "paymentId": payment_id }))?;
                book(ctx, amount, 0)?;
                let data = json!({ "orderId": r.order_id, "paymentId": payment_id, "amount": r.amount });
                ctx.emit(cause, &stream, "billing.charged", &data)
            }
            Event::Refund(r) => {
                let stream = format!("billing-{}", r.order_id);
                let key = format!("payment/{}", r.order_id);
                let amount = cents(r.amount);
                ctx.kv()
                    .set_json(&key, &json!({ "status": "refunded", "cents": amount, "paymentId": r.payment_id }))?;
                book(ctx, 0, amount)?;
                let data = json!({ "orderId": r.order_id, "paymentId": r.payment_id, "amount": r.amount });
                ctx.emit(cause, &stream, "billing.refunded", &data)
            }
        }
    }
}

impl Reactor for Billing {
    fn emits() -> Emits {
        Emits::new("billing-")
    }
}

reel_guest_sdk::export_reactor!(Billing);
