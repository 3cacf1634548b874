//! Helpers for the tests' stand-in HTTP servers (the Hugging Face hub, say).

/// The byte range an HTTP `Range: bytes=A-B` header asks of a body of `len` bytes (the whole
/// body without one), for the test servers that stand in for the Hugging Face hub.
pub fn byte_range(range_header: Option<&str>, len: usize) -> (usize, usize) {
    let (a, b) = range_header
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .unwrap_or((0, len.saturating_sub(1)));
    (a, b.min(len.saturating_sub(1)))
}
