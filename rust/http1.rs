//! HTTP/1.1 message heads for the delivery transport: request heads are written here, response
//! heads parsed (with `httparse`), and the body framing of RFC 9112 §6.3 decided here, so the
//! Python side only moves bytes.

use std::fmt;

/// Header slots on the stack; a head with more headers gets one slot per line on the heap (its
/// size is capped, so their number is too).
pub const MAX_HEADERS: usize = 128;
/// A response head larger than this is refused rather than buffered without end.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes follow (0 for 1xx, 204, 304 and answers to HEAD).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body runs until the server closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the buffer the head took (the body starts there).
    pub consumed: usize,
    pub status: u16,
    pub reason: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub framing: Framing,
    /// Whether the connection may carry another request after this response's body.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not valid HTTP/1.x (a malformed line, a bad header, conflicting lengths...).
    Invalid(String),
    /// The head is larger than `MAX_HEAD_BYTES`.
    TooLarge,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Invalid(why) => write!(f, "invalid HTTP/1.1 message: {why}"),
            HeadError::TooLarge => write!(f, "response head over {MAX_HEAD_BYTES} bytes"),
        }
    }
}

impl std::error::Error for HeadError {}

fn invalid(why: impl Into<String>) -> HeadError {
    HeadError::Invalid(why.into())
}

/// Parses the response head at the start of `buf`: `Ok(None)` while it is incomplete.
/// `head_request` tells whether the request was a HEAD (its response has no body).
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if let Some(parsed) = parse_in(&mut slots, buf, head_request) {
        return parsed;
    }
    let head = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let lines = head.iter().filter(|&&b| b == b'\n').count();
    let mut slots = vec![httparse::EMPTY_HEADER; lines];
    parse_in(&mut slots, buf, head_request).unwrap_or(Err(HeadError::TooLarge))
}

/// `parse_response_head` with these header slots; None if they are too few.
fn parse_in<'b>(
    slots: &mut [httparse::Header<'b>],
    buf: &'b [u8],
    head_request: bool,
) -> Option<Result<Option<ResponseHead>, HeadError>> {
    let mut response = httparse::Response::new(slots);
    // RFC 9112 §5.2: a client must accept a header folded over lines (obs-fold).
    let parsed = httparse::ParserConfig::default()
        .allow_obsolete_multiline_headers_in_responses(true)
        .parse_response(&mut response, buf);
    let consumed = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Some(Err(HeadError::TooLarge))
        }
        Ok(httparse::Status::Partial) => return Some(Ok(None)),
        Err(httparse::Error::TooManyHeaders) => return None,
        Err(err) => return Some(Err(invalid(err.to_string()))),
    };
    Some(judge(&response, consumed, head_request))
}

/// The head's status, headers and framing, from what httparse found.
fn judge(
    response: &httparse::Response<'_, '_>,
    consumed: usize,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    if consumed > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let status = response.code.ok_or_else(|| invalid("no status code"))?;
    if !(100..=999).contains(&status) {
        return Err(invalid(format!("status {status}")));
    }
    let http10 = response.version == Some(0);
    let mut headers = Vec::with_capacity(response.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = http10;
    for header in response.headers.iter() {
        let name = header.name.as_bytes();
        let value = header.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let n = parse_length(part)?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(invalid("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding decides: chunked last means chunked framing.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = trim(last).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        headers.push((name.to_vec(), unfolded(value)));
    }
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Length(0)
    } else if transfer_encoding {
        // Transfer-Encoding overrides Content-Length; a message with both may be a smuggling
        // attempt, so the connection is not reused after it.
        if length.is_some() {
            close = true;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if framing == Framing::UntilClose {
        close = true;
    }
    Ok(Some(ResponseHead {
        consumed,
        status,
        reason: response.reason.unwrap_or("").as_bytes().to_vec(),
        headers,
        framing,
        keep_alive: !close,
    }))
}

/// A header value with each obs-fold (a line break and the whitespace around it) replaced by
/// one space, as RFC 9112 §5.2 lets a recipient do.
fn unfolded(value: &[u8]) -> Vec<u8> {
    if !value.contains(&b'\n') {
        return value.to_vec();
    }
    let lines: Vec<&[u8]> = value
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join(&b' ')
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn parse_length(raw: &[u8]) -> Result<u64, HeadError> {
    let digits = trim(raw);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid("Content-Length is not a number"));
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| invalid("Content-Length is too large"))
    })
}

/// An RFC 9110 token (a method or a header name).
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Appends `METHOD target HTTP/1.1`, the headers and the blank line to `out`, refusing anything
/// that would let a value break out of its line (CR, LF, NUL) or an invalid name.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &[u8],
    target: &[u8],
    headers: &[(&[u8], &[u8])],
) -> Result<(), HeadError> {
    if !is_token(method) {
        return Err(invalid("invalid method"));
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(invalid("invalid request target"));
    }
    let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    out.reserve(method.len() + target.len() + 13 + size + 2);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if !is_token(name) {
            return Err(invalid("invalid header name"));
        }
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(invalid("a header value has a control character"));
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Option<ResponseHead>, HeadError> {
        parse_response_head(raw.as_bytes(), false)
    }

    #[test]
    fn length_delimited_keep_alive() {
        let head = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.reason, b"OK");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.consumed, 38);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&huge), Err(HeadError::TooLarge));
    }

    #[test]
    fn folded_headers_and_many_headers_are_read() {
        let head = parse("HTTP/1.1 200 OK\r\nX-A: one\r\n  two \r\n\tthree\r\nX-B: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            head.headers,
            [
                (b"X-A".to_vec(), b"one two three".to_vec()),
                (b"X-B".to_vec(), b"b".to_vec())
            ]
        );
        let cookies = "Set-Cookie: c=1\r\n".repeat(3 * MAX_HEADERS);
        let many = format!("HTTP/1.1 200 OK\r\n{cookies}Content-Length: 2\r\n\r\nok");
        let head = parse(&many).unwrap().unwrap();
        assert_eq!(head.headers.len(), 3 * MAX_HEADERS + 1);
        assert_eq!(head.framing, Framing::Length(2));
        let flood = format!(
            "HTTP/1.1 200 OK\r\n{}",
            "a:\r\n".repeat(MAX_HEAD_BYTES / 4 + 1)
        );
        assert_eq!(parse(&flood), Err(HeadError::TooLarge));
    }

    #[test]
    fn framing_rules() {
        let framing = |raw: &str| parse(raw).unwrap().unwrap().framing;
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(framing("HTTP/1.1 100 Continue\r\n\r\n"), Framing::Length(0));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        let head = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true);
        assert_eq!(head.unwrap().unwrap().framing, Framing::Length(0));
    }

    #[test]
    fn connection_reuse() {
        let keep = |raw: &str| parse(raw).unwrap().unwrap().keep_alive;
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keep(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keep("HTTP/1.1 200 OK\r\n\r\n")); // until close
        assert!(!keep(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn bad_lengths_and_lines_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(matches!(parse(raw), Err(HeadError::Invalid(_))), "{raw:?}");
        }
        let same = parse("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(same.framing, Framing::Length(5));
    }

    #[test]
    fn request_heads_are_written_and_checked() {
        let mut out = Vec::new();
        let headers: [(&[u8], &[u8]); 2] = [(b"Host", b"a.example"), (b"Content-Length", b"2")];
        write_request_head(&mut out, b"POST", b"/hook?x=1", &headers).unwrap();
        assert_eq!(
            out,
            b"POST /hook?x=1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\n\r\n".to_vec()
        );
        let mut sink = Vec::new();
        let injected: [(&[u8], &[u8]); 1] = [(b"X", b"a\r\nEvil: 1")];
        assert!(write_request_head(&mut sink, b"POST", b"/", &injected).is_err());
        let bad_name: [(&[u8], &[u8]); 1] = [(b"X Y", b"a")];
        assert!(write_request_head(&mut sink, b"POST", b"/", &bad_name).is_err());
        assert!(write_request_head(&mut sink, b"POST", b"/a b", &[]).is_err());
        assert!(write_request_head(&mut sink, b"PO ST", b"/", &[]).is_err());
    }
}
