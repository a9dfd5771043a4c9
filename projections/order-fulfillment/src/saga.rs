//! One saga's state and its transitions: which step waits for an answer,
//! which steps are done, which compensation runs, and what the manager did
//! at each event (its history). Pure: the caller stores the saga and sends
//! the [`Command`]s it returns.

use reel_guest_sdk::serde_json;
use serde::{Deserialize, Serialize};

/// A forward step of the saga, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    ReserveInventory,
    ProcessPayment,
    CreateShipment,
}

impl Step {
    /// The steps in the order they run.
    pub const ALL: [Step; 3] = [Step::ReserveInventory, Step::ProcessPayment, Step::CreateShipment];

    /// The step after this one, if any.
    pub fn next(self) -> Option<Step> {
        match self {
            Step::ReserveInventory => Some(Step::ProcessPayment),
            Step::ProcessPayment => Some(Step::CreateShipment),
            Step::CreateShipment => None,
        }
    }

    /// The request event that starts it.
    pub fn request(self) -> &'static str {
        match self {
            Step::ReserveInventory => "fulfillment.reserve-requested",
            Step::ProcessPayment => "fulfillment.charge-requested",
            Step::CreateShipment => "fulfillment.ship-requested",
        }
    }

    /// The name of the compensation that undoes it.
    pub fn compensation(self) -> &'static str {
        match self {
            Step::ReserveInventory => "release-inventory",
            Step::ProcessPayment => "refund-payment",
            Step::CreateShipment => "cancel-shipment",
        }
    }

    /// The request event that starts its compensation.
    pub fn compensation_request(self) -> &'static str {
        match self {
            Step::ReserveInventory => "fulfillment.release-requested",
            Step::ProcessPayment => "fulfillment.refund-requested",
            Step::CreateShipment => "fulfillment.cancel-shipment-requested",
        }
    }
}

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// A forward step waits for its answer.
    Running,
    /// A step failed (or the customer cancelled); compensations run.
    Compensating,
    /// Every step done: the order shipped.
    Completed,
    /// Ended after its compensations (or with none to run).
    Failed,
    /// Cancelled by the customer, its compensations done.
    Cancelled,
}

impl Status {
    /// Whether the saga has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// A line item as the saga passes it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
    #[serde(default)]
    pub price: f64,
}

/// One line of a saga's history: the event it handled and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The handled event's position in the log.
    pub position: i64,
    /// Its type.
    pub event: String,
    /// What the manager did.
    pub did: String,
}

/// A saga: one order's fulfillment, keyed by its correlation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saga {
    /// The correlation id every event of this saga carries (the position of
    /// its `order.placed` unless that event had one).
    pub saga: serde_json::Value,
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<Item>,
    pub total: f64,
    pub status: Status,
    /// The forward step waiting for its answer.
    pub pending: Option<Step>,
    /// Forward steps done, in the order they were done.
    pub completed: Vec<Step>,
    /// The step whose compensation waits for its answer.
    pub compensating: Option<Step>,
    /// Steps compensated, in the order they were (the reverse of `completed`).
    pub compensated: Vec<Step>,
    /// Steps that answered "done" after the saga had moved on (a charge
    /// after the payment timed out): their compensation was requested at once.
    pub late: Vec<Step>,
    /// `shipped`, `stock-out`, `payment-declined`, `payment-timeout`,
    /// `shipment-failed` or `cancelled`, once known.
    pub outcome: Option<String>,
    /// Why it failed (the participant's reason), if it did.
    pub reason: Option<String>,
    pub payment_id: Option<String>,
    pub shipment_id: Option<String>,
    /// Every event the saga handled, with what it did.
    pub history: Vec<Entry>,
}

/// What the manager sends as a consequence of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Ask for a forward step.
    Request(Step),
    /// Ask for the compensation of a step.
    Compensate(Step),
    /// Start the payment timeout (with the charge request).
    StartTimer,
    /// The answer came: stop the payment timeout.
    CancelTimer,
    /// The saga ended: `fulfillment.completed`, `.failed` or `.cancelled`.
    Finish(Status),
}

/// An answer from a participant, or the timer, as the saga sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The step succeeded (with the payment or shipment id it made, if any).
    Done { step: Step, id: Option<String> },
    /// The step failed.
    Failed { step: Step, outcome: &'static str, reason: String },
    /// The compensation of the step is done.
    Compensated(Step),
    /// The payment timeout fired.
    TimedOut,
    /// The customer cancelled the order.
    CancelledByCustomer,
}

impl Saga {
    /// A new saga for a placed order: asks for its first step.
    pub fn start(
        saga: serde_json::Value,
        order_id: String,
        customer_id: String,
        items: Vec<Item>,
        total: f64,
        position: i64,
    ) -> (Saga, Vec<Command>) {
        let mut s = Saga {
            saga,
            order_id,
            customer_id,
            items,
            total,
            status: Status::Running,
            pending: Some(Step::ReserveInventory),
            completed: Vec::new(),
            compensating: None,
            compensated: Vec::new(),
            late: Vec::new(),
            outcome: None,
            reason: None,
            payment_id: None,
            shipment_id: None,
            history: Vec::new(),
        };
        s.note(position, "order.placed", "requested reserve-inventory");
        (s, vec![Command::Request(Step::ReserveInventory)])
    }

    fn note(&mut self, position: i64, event: &str, did: impl Into<String>) {
        self.history.push(Entry { position, event: event.to_owned(), did: did.into() });
    }

    /// Apply `answer` (the event at `position`, of type `event`); what to send.
    pub fn on(&mut self, answer: Answer, position: i64, event: &str) -> Vec<Command> {
        let mut out = Vec::new();
        let did = match answer {
            Answer::Done { step, id } => self.done(step, id, &mut out),
            Answer::Failed { step, outcome, reason } => self.failed(step, outcome, reason, &mut out),
            Answer::Compensated(step) => self.compensated(step, &mut out),
            Answer::TimedOut => {
                if self.pending == Some(Step::ProcessPayment) {
                    let reason = "billing did not answer in time".to_owned();
                    let did = self.failed(Step::ProcessPayment, "payment-timeout", reason, &mut out);
                    // The timer has fired: nothing to cancel.
                    out.retain(|c| *c != Command::CancelTimer);
                    format!("payment timed out; {did}")
                } else {
                    "ignored: billing had answered".to_owned()
                }
            }
            Answer::CancelledByCustomer => self.cancel(&mut out),
        };
        self.note(position, event, did);
        out
    }

    fn done(&mut self, step: Step, id: Option<String>, out: &mut Vec<Command>) -> String {
        match step {
            Step::ProcessPayment => self.payment_id = id,
            Step::CreateShipment => self.shipment_id = id,
            Step::ReserveInventory => {}
        }
        if self.pending != Some(step) {
            // A late answer: the saga moved on without it (the payment timed
            // out, or the customer cancelled). What it did must be undone.
            if self.completed.contains(&step) || self.late.contains(&step) {
                return format!("ignored: {} was already answered", kebab(step));
            }
            self.late.push(step);
            out.push(Command::Compensate(step));
            return format!("late answer: requested {}", step.compensation());
        }
        self.pending = None;
        self.completed.push(step);
        if step == Step::ProcessPayment {
            out.push(Command::CancelTimer);
        }
        if self.status == Status::Compensating {
            // Cancelled while this step ran: undo it with the others.
            return format!("{} done; {}", kebab(step), self.next_compensation(out));
        }
        match step.next() {
            Some(next) => {
                self.pending = Some(next);
                out.push(Command::Request(next));
                if next == Step::ProcessPayment {
                    out.push(Command::StartTimer);
                }
                format!("requested {}", kebab(next))
            }
            None => {
                self.status = Status::Completed;
                self.outcome = Some("shipped".into());
                out.push(Command::Finish(Status::Completed));
                "completed".to_owned()
            }
        }
    }

    fn failed(&mut self, step: Step, outcome: &'static str, reason: String, out: &mut Vec<Command>) -> String {
        if self.pending != Some(step) {
            return format!("ignored: {} was not waiting for an answer", kebab(step));
        }
        self.pending = None;
        if step == Step::ProcessPayment {
            out.push(Command::CancelTimer);
        }
        if self.outcome.is_none() {
            self.outcome = Some(outcome.to_owned());
            self.reason = Some(reason);
        }
        self.status = Status::Compensating;
        format!("{} failed; {}", kebab(step), self.next_compensation(out))
    }

    fn compensated(&mut self, step: Step, out: &mut Vec<Command>) -> String {
        if self.compensating != Some(step) {
            // The compensation of a late answer: nothing waits for it.
            return format!("{} done", step.compensation());
        }
        self.compensating = None;
        self.compensated.push(step);
        format!("{} done; {}", step.compensation(), self.next_compensation(out))
    }

    fn cancel(&mut self, out: &mut Vec<Command>) -> String {
        if self.status != Status::Running && self.status != Status::Completed {
            return "ignored: the saga is already ending".to_owned();
        }
        self.outcome = Some("cancelled".into());
        self.reason = Some("cancelled by the customer".into());
        self.status = Status::Compensating;
        if self.pending.is_some() {
            // Its answer decides whether it needs undoing (see `done`).
            return "cancel noted: waiting for the running step".to_owned();
        }
        self.next_compensation(out)
    }

    /// Compensate the last completed step not compensated yet, or end.
    fn next_compensation(&mut self, out: &mut Vec<Command>) -> String {
        if self.pending.is_some() {
            return "waiting for the running step".to_owned();
        }
        let next = self.completed.iter().rev().find(|s| !self.compensated.contains(s)).copied();
        match next {
            Some(step) => {
                self.compensating = Some(step);
                out.push(Command::Compensate(step));
                format!("requested {}", step.compensation())
            }
            None => {
                self.status =
                    if self.outcome.as_deref() == Some("cancelled") { Status::Cancelled } else { Status::Failed };
                out.push(Command::Finish(self.status));
                "ended".to_owned()
            }
        }
    }
}

/// A step's name as the history writes it.
pub fn kebab(step: Step) -> &'static str {
    match step {
        Step::ReserveInventory => "reserve-inventory",
        Step::ProcessPayment => "process-payment",
        Step::CreateShipment => "create-shipment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga() -> Saga {
        Saga::start(1.into(), "o-1".into(), "c-1".into(), Vec::new(), 10.0, 1).0
    }

    fn done(step: Step) -> Answer {
        Answer::Done { step, id: Some("x".into()) }
    }

    #[test]
    fn a_shipment_failure_compensates_payment_then_inventory() {
        let mut s = saga();
        assert_eq!(
            s.on(done(Step::ReserveInventory), 2, "e"),
            [Command::Request(Step::ProcessPayment), Command::StartTimer]
        );
        assert_eq!(
            s.on(done(Step::ProcessPayment), 3, "e"),
            [Command::CancelTimer, Command::Request(Step::CreateShipment)]
        );
        let failed = Answer::Failed { step: Step::CreateShipment, outcome: "shipment-failed", reason: "r".into() };
        assert_eq!(s.on(failed, 4, "e"), [Command::Compensate(Step::ProcessPayment)]);
        assert_eq!(
            s.on(Answer::Compensated(Step::ProcessPayment), 5, "e"),
            [Command::Compensate(Step::ReserveInventory)]
        );
        assert_eq!(s.on(Answer::Compensated(Step::ReserveInventory), 6, "e"), [Command::Finish(Status::Failed)]);
        assert_eq!(s.compensated, [Step::ProcessPayment, Step::ReserveInventory]);
        assert_eq!(s.outcome.as_deref(), Some("shipment-failed"));
    }

    #[test]
    fn a_timeout_releases_and_a_late_charge_is_refunded() {
        let mut s = saga();
        s.on(done(Step::ReserveInventory), 2, "e");
        assert_eq!(s.on(Answer::TimedOut, 3, "e"), [Command::Compensate(Step::ReserveInventory)]);
        assert_eq!(s.on(done(Step::ProcessPayment), 4, "e"), [Command::Compensate(Step::ProcessPayment)]);
        assert_eq!(s.on(Answer::Compensated(Step::ReserveInventory), 5, "e"), [Command::Finish(Status::Failed)]);
        assert!(s.on(Answer::Compensated(Step::ProcessPayment), 6, "e").is_empty());
        assert_eq!(s.outcome.as_deref(), Some("payment-timeout"));
        assert_eq!(s.status, Status::Failed);
    }

    #[test]
    fn a_timer_after_the_answer_is_ignored() {
        let mut s = saga();
        s.on(done(Step::ReserveInventory), 2, "e");
        s.on(done(Step::ProcessPayment), 3, "e");
        assert!(s.on(Answer::TimedOut, 4, "e").is_empty());
        assert_eq!(s.pending, Some(Step::CreateShipment));
    }

    #[test]
    fn a_cancelled_shipped_order_undoes_every_step_in_reverse() {
        let mut s = saga();
        for step in Step::ALL {
            s.on(done(step), 2, "e");
        }
        assert_eq!(s.status, Status::Completed);
        assert_eq!(s.on(Answer::CancelledByCustomer, 5, "e"), [Command::Compensate(Step::CreateShipment)]);
        assert_eq!(
            s.on(Answer::Compensated(Step::CreateShipment), 6, "e"),
            [Command::Compensate(Step::ProcessPayment)]
        );
        assert_eq!(
            s.on(Answer::Compensated(Step::ProcessPayment), 7, "e"),
            [Command::Compensate(Step::ReserveInventory)]
        );
        assert_eq!(s.on(Answer::Compensated(Step::ReserveInventory), 8, "e"), [Command::Finish(Status::Cancelled)]);
    }

    #[test]
    fn a_cancel_while_a_step_runs_waits_for_its_answer() {
        let mut s = saga();
        assert!(s.on(Answer::CancelledByCustomer, 2, "e").is_empty());
        assert_eq!(s.on(done(Step::ReserveInventory), 3, "e"), [Command::Compensate(Step::ReserveInventory)]);
        assert_eq!(s.on(Answer::Compensated(Step::ReserveInventory), 4, "e"), [Command::Finish(Status::Cancelled)]);
    }
}
