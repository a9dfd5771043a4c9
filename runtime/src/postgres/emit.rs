//! A reactor batch's emissions on PostgreSQL (ADR 23, 47): `reel.emit`,
//! called in the batch's transaction with one array per field, sent down
//! the pipeline without waiting; what it appended and dropped is known once
//! the transaction has committed.

use std::sync::{Arc, Mutex};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use reel_model::{Emission, Emissions, Forwarded};

use super::pipeline::Flight;
use super::value::ArrayParam;

/// The call, with the batch's emissions. The casts are schema-qualified: a
/// projection's SQL may change the session's `search_path` before reel
/// prepares it, and a `text` of its own would make the client refuse the
/// parameter without sending the call.
pub(super) const EMIT: &str = "SELECT emitted, dropped FROM reel.emit($1::pg_catalog.text, $2, $3, $4, $5, $6, $7, \
                               $8, $9, $10::pg_catalog.text::pg_catalog.jsonb)";

/// Most bytes of emissions in one call, with a margin for the rest of its
/// message: PostgreSQL takes no message of 1 GiB or more (it closes the
/// connection).
const MAX_CALL_BYTES: usize = (1 << 30) - (16 << 20);

/// Where a call leaves what it appended and dropped, once answered.
pub(super) type Counts = Arc<Mutex<Option<Forwarded>>>;

/// A batch's emissions as `reel.emit` takes them: one array per field, in
/// emission order.
pub(super) struct EmitColumns {
    causes: ArrayParam,
    cause_txs: ArrayParam,
    indexes: ArrayParam,
    /// Each emission's rank among the batch's emissions to its stream, 1
    /// first: its version is the stream's last plus this.
    nths: ArrayParam,
    streams: ArrayParam,
    types: ArrayParam,
    data: ArrayParam,
    metadata: ArrayParam,
    timers: String,
}

impl EmitColumns {
    /// The columns of `emissions`; refused past what one call can carry.
    pub fn new(emissions: &Emissions) -> Result<Self, String> {
        let mut c = Self {
            causes: ArrayParam::new(Type::INT8),
            cause_txs: ArrayParam::new(Type::INT8),
            indexes: ArrayParam::new(Type::INT4),
            nths: ArrayParam::new(Type::INT4),
            streams: ArrayParam::new(Type::TEXT),
            types: ArrayParam::new(Type::TEXT),
            data: ArrayParam::new(Type::TEXT),
            metadata: ArrayParam::new(Type::TEXT),
            timers: emissions.timers_json(),
        };
        let mut bytes = c.timers.len();
        for (e, nth) in emissions.events.iter().zip(stream_ranks(&emissions.events)) {
            let index = i32::try_from(e.index).map_err(|_| format!("emission index {} out of range", e.index))?;
            // Each element of the eight arrays has a 4-byte length; the
            // numbers take 8 + 8 + 4 + 4.
            bytes += e.stream_id.len() + e.event_type.len() + e.data.len() + e.metadata.len() + 8 * 4 + 24;
            if bytes > MAX_CALL_BYTES {
                return Err(format!("a batch's emissions over {} MiB in one call", MAX_CALL_BYTES >> 20));
            }
            c.causes.push(&e.cause.to_be_bytes());
            c.cause_txs.push(&e.cause_cursor.tx.to_be_bytes());
            c.indexes.push(&index.to_be_bytes());
            c.nths.push(&nth.to_be_bytes());
            c.streams.push(e.stream_id.as_bytes());
            c.types.push(e.event_type.as_bytes());
            c.data.push(e.data.as_bytes());
            c.metadata.push(e.metadata.as_bytes());
        }
        Ok(c)
    }

    /// Why these cannot fill `statement`'s parameters, or its answer would
    /// not be read: what the client library would refuse without sending
    /// the call, or after the server ran it.
    pub fn unfit(&self, statement: &Statement) -> Option<String> {
        let columns: Vec<&Type> = statement.columns().iter().map(|c| c.type_()).collect();
        if columns != [&Type::INT4, &Type::INT4] {
            return Some(format!("reel.emit answers {columns:?}, not two integers"));
        }
        let arrays = [
            &self.causes,
            &self.cause_txs,
            &self.indexes,
            &self.nths,
            &self.streams,
            &self.types,
            &self.data,
            &self.metadata,
        ];
        let types = statement.params();
        if types.len() != arrays.len() + 2 {
            return Some(format!("reel.emit takes {} parameters, not {}", types.len(), arrays.len() + 2));
        }
        if let Some(ty) = [&types[0], &types[arrays.len() + 1]].into_iter().find(|ty| **ty != Type::TEXT) {
            return Some(format!("reel.emit's text parameter is of type {ty}"));
        }
        let (n, (_, ty)) = arrays.iter().zip(&types[1..]).enumerate().find(|(_, (array, ty))| !array.fits(ty))?;
        Some(format!("reel.emit's parameter ${} is of type {ty}", n + 2))
    }

    /// The call of namespace `slug` with these, leaving its answer in
    /// `counts`.
    pub fn flight(self, client: Arc<Client>, statement: Statement, slug: String, counts: Counts) -> Flight {
        Box::pin(async move {
            let c = &self;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                &slug,
                &c.causes,
                &c.cause_txs,
                &c.indexes,
                &c.nths,
                &c.streams,
                &c.types,
                &c.data,
                &c.metadata,
                &c.timers,
            ];
            let row = client.query_one(&statement, &params).await?;
            let (emitted, dropped): (i32, i32) = (row.try_get(0)?, row.try_get(1)?);
            *counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some(Forwarded { emitted: emitted as u64, dropped: dropped as u64 });
            Ok(1)
        })
    }
}

/// Each emission's rank among those to its stream, 1 first, in order.
fn stream_ranks(events: &[Emission]) -> Vec<i32> {
    let mut ranks: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
    events
        .iter()
        .map(|e| {
            let nth = ranks.entry(e.stream_id.as_str()).or_default();
            *nth += 1;
            *nth
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use reel_model::{Cursor, Emission, Emissions};

    fn to(stream: &str, index: u32) -> Emission {
        Emission {
            cause: 1,
            cause_cursor: Cursor { tx: 0, id: 1 },
            index,
            stream_id: stream.into(),
            event_type: "t".into(),
            data: "{}".into(),
            metadata: "{}".into(),
        }
    }

    /// A stream's emissions in a batch take its next versions in order:
    /// each one's rank among them, whatever comes in between.
    #[test]
    fn ranks_count_each_streams_emissions_in_order() {
        let events: Vec<Emission> = ["a", "b", "a", "c", "a", "b"].into_iter().map(|s| to(s, 0)).collect();
        assert_eq!(super::stream_ranks(&events), [1, 1, 2, 1, 3, 2]);
        assert!(super::stream_ranks(&[]).is_empty());
    }

    /// An index the call's integer cannot hold is refused, not cut.
    #[test]
    fn an_index_out_of_range_is_refused() {
        let emissions = Emissions { events: vec![to("a", u32::MAX)], ..Emissions::default() };
        let refused = super::EmitColumns::new(&emissions).err().expect("refused");
        assert_eq!(refused, format!("emission index {} out of range", u32::MAX));
    }
}
