//! Reads of a projection's change history (ADR 28), for the change feed:
//! a page after a resume point, from the serving version's namespace,
//! saying when that is another namespace than the point's (a cut-over).

use reel_model::Cursor;

use super::{ReadError, Reads};
use crate::store::{ChangePage, NamespaceId};

/// Where a change-feed client is: after `seq` in namespace `slug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePoint {
    /// The namespace's slug ([`NamespaceId::slug`]).
    pub slug: String,
    /// The last change the client had (0: none).
    pub seq: i64,
}

impl ChangePoint {
    /// The point before every change of `ns`.
    pub fn start(ns: &NamespaceId) -> Self {
        Self { slug: ns.slug(), seq: 0 }
    }

    /// The resume token: `seq:slug`.
    pub fn token(&self) -> String {
        format!("{}:{}", self.seq, self.slug)
    }

    /// Parse a [`token`](Self::token).
    pub fn parse(token: &str) -> Option<Self> {
        let (seq, slug) = token.split_once(':')?;
        let seq = seq.parse().ok().filter(|s: &i64| *s >= 0 && seq.bytes().all(|b| b.is_ascii_digit()))?;
        NamespaceId::from_slug(slug)?;
        Some(Self { slug: slug.to_owned(), seq })
    }
}

/// A page of changes of the serving version.
#[derive(Debug)]
pub struct ChangeRead {
    /// Where the page starts: the asked-for point, or the start of the
    /// serving namespace when the point was in another (`reset`).
    pub from: ChangePoint,
    /// The point was in another namespace than the serving one: the
    /// version changed (or the projection was rebuilt) since.
    pub reset: bool,
    /// The changes and the history's bounds.
    pub page: ChangePage,
    /// The serving version's applied position now.
    pub position: Cursor,
}

impl ChangeRead {
    /// The history no longer holds what follows `from`: the retention
    /// window dropped it.
    pub fn gone(&self) -> bool {
        self.from.seq < self.page.pruned_through
    }
}

impl Reads {
    /// Whether `name`'s changes are captured (`--set NAME.changes=on`).
    pub fn captures_changes(&self, name: &str) -> bool {
        self.config().changes_for(name).is_some()
    }

    /// How long changes are kept.
    pub fn changes_retention(&self) -> std::time::Duration {
        self.config().changes_retention
    }

    /// Up to `limit` changes of the serving version of `name` after `after`
    /// (`None`: from the start of its history).
    pub async fn changes(
        &self,
        name: &str,
        after: Option<&ChangePoint>,
        limit: usize,
    ) -> Result<ChangeRead, ReadError> {
        let (view, turn) = self.serving(name).await?;
        let (from, reset) = match after {
            Some(point) if point.slug == view.ns.slug() => (point.clone(), false),
            Some(_) => (ChangePoint::start(&view.ns), true),
            None => (ChangePoint::start(&view.ns), false),
        };
        let position = view.status.snapshot().cursor;
        let seq = from.seq;
        let page = self.on_reader(view, turn, move |reader| reader.changes(seq, limit)).await?;
        Ok(ChangeRead { from, reset, page, position })
    }

    /// Wakes when the serving version of `name` commits a batch (a
    /// cut-over replaces it: wait with a timeout).
    pub fn applied(&self, name: &str) -> Result<tokio::sync::watch::Receiver<Cursor>, ReadError> {
        Ok(self.view(name)?.status.applied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_what_reel_did_not_hand_out() {
        let point = ChangePoint { slug: NamespaceId::new("orders", "2").next_generation().slug(), seq: 42 };
        assert_eq!(point.token(), "42:orders@2+g1");
        assert_eq!(ChangePoint::parse(&point.token()), Some(point));
        assert_eq!(ChangePoint::parse("42"), None);
        assert_eq!(ChangePoint::parse("-1:orders@2"), None);
        assert_eq!(ChangePoint::parse("x:orders@2"), None);
    }
}
