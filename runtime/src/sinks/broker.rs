//! The brokers: a connection that publishes a batch of messages, and the
//! batch in flight, which says once the broker has confirmed every one
//! (JetStream's publish acknowledgements; RabbitMQ's publisher confirms),
//! or why not.

use std::time::Duration;

use async_nats::jetstream;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};

use super::messages::Outgoing;
use crate::config::hide_password;
use crate::host::sink::Broker;

/// How long a connection attempt or a confirmation may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a confirmed batch came to.
#[derive(Debug, Default, Clone, Copy)]
pub struct Confirmed {
    /// Messages the broker stored.
    pub stored: u64,
    /// Messages the broker recognised as already stored (JetStream's
    /// duplicates, dropped by their `Nats-Msg-Id`).
    pub duplicates: u64,
}

/// A connection to a sink's broker.
pub enum Publisher {
    /// NATS JetStream.
    Nats(jetstream::Context),
    /// RabbitMQ, on a channel in confirm mode.
    Amqp {
        /// Kept open while the channel is used.
        connection: Connection,
        /// The channel.
        channel: lapin::Channel,
        /// The exchange messages go to.
        exchange: String,
    },
}

impl Publisher {
    /// Connect to the broker at `url`.
    pub async fn connect(broker: Broker, url: &str, exchange: &str) -> Result<Self, String> {
        let shown = hide_password(url);
        match broker {
            Broker::Nats => {
                let options = async_nats::ConnectOptions::new()
                    .connection_timeout(TIMEOUT)
                    .name("reel sink")
                    // Messages are published again from the checkpoint: no
                    // need to keep them while the connection is away.
                    .client_capacity(4096);
                let client = tokio::time::timeout(TIMEOUT, async_nats::connect_with_options(url, options))
                    .await
                    .map_err(|_| format!("NATS at {shown}: no answer within {TIMEOUT:?}"))?
                    .map_err(|e| format!("NATS at {shown}: {e}"))?;
                let mut context = jetstream::new(client);
                context.set_timeout(TIMEOUT);
                Ok(Publisher::Nats(context))
            }
            Broker::Amqp => {
                let connect = Connection::connect(url, ConnectionProperties::default());
                let connection = tokio::time::timeout(TIMEOUT, connect)
                    .await
                    .map_err(|_| format!("RabbitMQ at {shown}: no answer within {TIMEOUT:?}"))?
                    .map_err(|e| format!("RabbitMQ at {shown}: {e}"))?;
                let channel = connection.create_channel().await.map_err(|e| format!("RabbitMQ at {shown}: {e}"))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| format!("RabbitMQ at {shown}: confirm.select: {e}"))?;
                Ok(Publisher::Amqp { connection, channel, exchange: exchange.to_owned() })
            }
        }
    }

    /// Publish `messages` in order, without waiting for the broker: what
    /// [`InFlight::confirmed`] waits for. Several batches may be in flight
    /// on the connection, each published after the one before it. An error
    /// means some may be stored and some not: the caller publishes them all
    /// again (the dedup ids make that safe).
    pub async fn send(&mut self, messages: &[Outgoing]) -> Result<InFlight, String> {
        match self {
            Publisher::Nats(context) => send_nats(context, messages).await,
            Publisher::Amqp { connection, channel, exchange } => {
                if !connection.status().connected() {
                    return Err("RabbitMQ: the connection is closed".into());
                }
                send_amqp(channel, exchange, messages).await
            }
        }
    }
}

/// A batch published and not yet confirmed.
pub enum InFlight {
    /// JetStream's publish acknowledgements, one per message.
    Nats(Vec<jetstream::context::PublishAckFuture>),
    /// RabbitMQ's publisher confirms, one per message, and the exchange.
    Amqp(Vec<lapin::PublisherConfirm>, String),
}

impl InFlight {
    /// Wait until the broker confirmed every message of the batch
    /// (`messages`, as sent), or say why not.
    pub async fn confirmed(self, messages: &[Outgoing]) -> Result<Confirmed, String> {
        match self {
            InFlight::Nats(acks) => confirm_nats(acks, messages).await,
            InFlight::Amqp(confirms, exchange) => confirm_amqp(confirms, &exchange, messages).await,
        }
    }
}

async fn send_nats(context: &jetstream::Context, messages: &[Outgoing]) -> Result<InFlight, String> {
    let mut acks = Vec::with_capacity(messages.len());
    for m in messages {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &m.headers {
            headers.append(name.as_ref(), value.as_str());
        }
        let publish =
            jetstream::message::PublishMessage::build().payload(m.body.clone()).headers(headers).message_id(&m.id);
        let ack = context
            .send_publish(m.subject.clone(), publish)
            .await
            .map_err(|e| format!("NATS: publishing to `{}`: {e}", m.subject))?;
        acks.push(ack);
    }
    Ok(InFlight::Nats(acks))
}

async fn confirm_nats(
    acks: Vec<jetstream::context::PublishAckFuture>,
    messages: &[Outgoing],
) -> Result<Confirmed, String> {
    let mut confirmed = Confirmed::default();
    for (ack, m) in acks.into_iter().zip(messages) {
        let ack = ack.await.map_err(|e| match e.kind() {
            jetstream::context::PublishErrorKind::StreamNotFound => format!(
                "NATS: no JetStream stream takes subject `{}`: create one whose subjects match it \
                 (e.g. `nats stream add`), with a duplicate window",
                m.subject
            ),
            _ => format!("NATS: no acknowledgement for message {} on `{}`: {e}", m.id, m.subject),
        })?;
        if ack.duplicate {
            confirmed.duplicates += 1;
        } else {
            confirmed.stored += 1;
        }
    }
    Ok(confirmed)
}

async fn send_amqp(channel: &lapin::Channel, exchange: &str, messages: &[Outgoing]) -> Result<InFlight, String> {
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        let mut headers = FieldTable::default();
        for (name, value) in &m.headers {
            if name.eq_ignore_ascii_case("Content-Type") {
                continue;
            }
            headers.insert(name.as_ref().into(), AMQPValue::LongString(value.as_str().into()));
        }
        let mut properties = BasicProperties::default()
            .with_message_id(m.id.as_str().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some((_, content_type)) = m.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("Content-Type")) {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        // Mandatory: a message no queue takes comes back, and counts as
        // not delivered (RabbitMQ would otherwise drop it and confirm).
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(exchange.into(), m.subject.as_str().into(), options, &m.body, properties)
            .await
            .map_err(|e| format!("RabbitMQ: publishing to `{}`: {e}", m.subject))?;
        confirms.push(confirm);
    }
    Ok(InFlight::Amqp(confirms, exchange.to_owned()))
}

async fn confirm_amqp(
    confirms: Vec<lapin::PublisherConfirm>,
    exchange: &str,
    messages: &[Outgoing],
) -> Result<Confirmed, String> {
    let mut confirmed = Confirmed::default();
    for (confirm, m) in confirms.into_iter().zip(messages) {
        let confirmation = tokio::time::timeout(TIMEOUT, confirm)
            .await
            .map_err(|_| format!("RabbitMQ: no confirmation for message {} within {TIMEOUT:?}", m.id))?
            .map_err(|e| format!("RabbitMQ: no confirmation for message {}: {e}", m.id))?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => confirmed.stored += 1,
            Confirmation::Ack(Some(_)) => {
                return Err(format!(
                    "RabbitMQ: message {} was returned: no queue is bound to exchange `{exchange}` with routing key `{}`",
                    m.id, m.subject
                ));
            }
            Confirmation::Nack(_) => return Err(format!("RabbitMQ refused message {} (nack)", m.id)),
        }
    }
    Ok(confirmed)
}
