//! Text from database bytes.

/// `bytes` as a `String`, invalid UTF-8 replaced by U+FFFD.
///
/// `String::from_utf8_lossy` checks byte by byte; `str::from_utf8` checks a
/// word at a time when the text is ASCII, as event payloads mostly are. In a
/// SQLite rebuild the lossy check was half of the thread reading the events.
pub fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn valid_text_is_kept_and_invalid_bytes_are_replaced() {
        assert_eq!(super::lossy("order-é-1 {\"a\":1}".as_bytes()), "order-é-1 {\"a\":1}");
        assert_eq!(super::lossy(b"ab\xffcd"), "ab\u{fffd}cd");
        assert_eq!(super::lossy(b""), "");
    }
}
