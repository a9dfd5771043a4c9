//! Which events a projection subscribed to, as a SQL condition.

/// The subscription of a projection: exact event types, event type prefixes
/// (`order.*` in the manifest) and stream id prefixes. Empty lists match all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Exact event types.
    pub types: Vec<String>,
    /// Event type prefixes (the manifest's `prefix*`, without the `*`).
    pub type_prefixes: Vec<String>,
    /// Stream id prefixes.
    pub stream_prefixes: Vec<String>,
}

/// A condition with positional parameters, written for one placeholder style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `AND ...` conditions to append to a WHERE clause (may be empty).
    pub sql: String,
    /// Values for the placeholders, in order.
    pub params: Vec<String>,
}

impl Filter {
    /// The filter of a manifest's `event-types` and `stream-prefixes`.
    pub fn new(event_types: &[String], stream_prefixes: &[String]) -> Self {
        let mut filter = Filter::default();
        for t in event_types {
            match t.strip_suffix('*') {
                Some("") => return Filter { stream_prefixes: stream_prefixes.to_vec(), ..Filter::default() },
                Some(prefix) => filter.type_prefixes.push(prefix.to_owned()),
                None => filter.types.push(t.clone()),
            }
        }
        filter.stream_prefixes = stream_prefixes.iter().filter(|p| !p.is_empty()).cloned().collect();
        if filter.stream_prefixes.len() < stream_prefixes.len() {
            filter.stream_prefixes.clear(); // an empty prefix matches every stream
        }
        filter
    }

    /// Does `event_type` / `stream_id` pass the filter (the SQL's twin).
    pub fn matches(&self, event_type: &str, stream_id: &str) -> bool {
        let type_ok = (self.types.is_empty() && self.type_prefixes.is_empty())
            || self.types.iter().any(|t| t == event_type)
            || self.type_prefixes.iter().any(|p| event_type.starts_with(p.as_str()));
        let stream_ok =
            self.stream_prefixes.is_empty() || self.stream_prefixes.iter().any(|p| stream_id.starts_with(p.as_str()));
        type_ok && stream_ok
    }

    /// The condition in SQL, with placeholders made by `placeholder(n)` for
    /// the n-th parameter (counting from `first`). Prefix tests compare a
    /// substring, never `LIKE`, so `%`, `_` and case are taken literally.
    pub fn condition(&self, first: usize, placeholder: impl Fn(usize) -> String) -> Condition {
        let mut params = Vec::new();
        let next = |value: &str, params: &mut Vec<String>| {
            params.push(value.to_owned());
            placeholder(first + params.len() - 1)
        };
        let mut sql = String::new();
        let mut alternatives = Vec::new();
        for t in &self.types {
            alternatives.push(format!("event_type = {}", next(t, &mut params)));
        }
        for p in &self.type_prefixes {
            let len = p.chars().count();
            alternatives.push(format!("substr(event_type, 1, {len}) = {}", next(p, &mut params)));
        }
        if !alternatives.is_empty() {
            sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        }
        let streams: Vec<String> = self
            .stream_prefixes
            .iter()
            .map(|p| format!("substr(stream_id, 1, {}) = {}", p.chars().count(), next(p, &mut params)))
            .collect();
        if !streams.is_empty() {
            sql.push_str(&format!(" AND ({})", streams.join(" OR ")));
        }
        Condition { sql, params }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_types_prefixes_and_streams_make_one_condition() {
        let f = Filter::new(&strings(&["order.placed", "invoice.*"]), &strings(&["order-"]));
        let c = f.condition(2, |n| format!("?{n}"));
        assert_eq!(c.sql, " AND (event_type = ?2 OR substr(event_type, 1, 8) = ?3) AND (substr(stream_id, 1, 6) = ?4)");
        assert_eq!(c.params, strings(&["order.placed", "invoice.", "order-"]));
        assert!(f.matches("invoice.sent", "order-1"));
        assert!(!f.matches("invoice.sent", "customer-1"));
        assert!(!f.matches("order.shipped", "order-1"));
    }

    #[test]
    fn a_bare_star_or_nothing_matches_everything() {
        for types in [strings(&["*"]), strings(&[])] {
            let f = Filter::new(&types, &[]);
            assert_eq!(f.condition(1, |n| format!("${n}")).sql, "");
            assert!(f.matches("anything", "any"));
        }
    }
}
