//! SIPREC request bodies: `multipart/mixed` (RFC 2046) with an SDP and a metadata part.
//!
//! Parts are found by their delimiter lines on the raw bytes; nothing inside a part is rewritten
//! (normalising line endings has broken SDP bodies in other recorders). Part order varies by
//! vendor and unknown parts (e.g. Cisco's `application/gtd`) are skipped.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("multipart body without a boundary parameter")]
    NoBoundary,
    #[error("multipart body has no part delimited by its boundary")]
    NoParts,
    #[error("unsupported body type {0}")]
    Unsupported(String),
}

/// The parts a recording server uses.
#[derive(Debug, Default, PartialEq)]
pub struct SiprecBody<'a> {
    pub sdp: Option<&'a [u8]>,
    pub metadata: Option<&'a [u8]>,
}

/// Lowercased `type/subtype` of a Content-Type value, parameters dropped.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_metadata(essence: &str) -> bool {
    matches!(
        essence,
        "application/rs-metadata+xml" | "application/rs-metadata"
    )
}

/// Splits a request body by its Content-Type. An empty body yields no parts.
pub fn split<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<SiprecBody<'a>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SiprecBody::default());
    }
    let ct = content_type.unwrap_or("application/sdp");
    let kind = essence(ct);
    match kind.as_str() {
        "application/sdp" => Ok(SiprecBody {
            sdp: Some(body),
            metadata: None,
        }),
        k if is_metadata(k) => Ok(SiprecBody {
            sdp: None,
            metadata: Some(body),
        }),
        "multipart/mixed" | "multipart/related" | "multipart/alternative" => {
            let boundary = boundary(ct).ok_or(BodyError::NoBoundary)?;
            let mut out = SiprecBody::default();
            let mut found = false;
            for (headers, content) in parts(body, boundary.as_bytes()) {
                found = true;
                let part_type = header_value(headers, "content-type")
                    .map(|v| essence(&v))
                    .unwrap_or_else(|| "text/plain".into());
                if part_type == "application/sdp" && out.sdp.is_none() {
                    out.sdp = Some(content);
                } else if is_metadata(&part_type) && out.metadata.is_none() {
                    out.metadata = Some(content);
                }
            }
            if found {
                Ok(out)
            } else {
                Err(BodyError::NoParts)
            }
        }
        _ => Err(BodyError::Unsupported(kind)),
    }
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Iterates `(header bytes, content bytes)` of each part.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    // Offsets of delimiter lines: at the start of the body or after a line break.
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&body[i..], &delim) {
        let at = i + pos;
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
        }
        i = at + delim.len();
    }
    let dlen = delim.len();
    // A body whose last part has no close-delimiter (seen from real SBCs): the end of the body
    // ends that part, rather than losing it (and with it, often, the metadata).
    if let Some(&last) = starts.last()
        && !body[last + dlen..].starts_with(b"--")
    {
        starts.push(body.len());
    }
    starts
        .windows(2)
        .filter_map(|w| {
            let (open, next) = (w[0], w[1]);
            if body[open + dlen..].starts_with(b"--") {
                return None;
            }
            // Skip the rest of the delimiter line (transport padding, CRLF).
            let line_end = open + dlen + find(&body[open + dlen..next], b"\n")? + 1;
            // The line break before the next delimiter belongs to it.
            let mut end = next;
            if end > line_end && body[end - 1] == b'\n' {
                end -= 1;
                if end > line_end && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            let part = &body[line_end..end.max(line_end)];
            Some(match find(part, b"\r\n\r\n") {
                Some(h) => (&part[..h], &part[h + 4..]),
                None => match find(part, b"\n\n") {
                    Some(h) => (&part[..h], &part[h + 2..]),
                    // No headers at all: RFC 2046 allows a part to start with its blank line.
                    None if part.starts_with(b"\r\n") => (&part[..0], &part[2..]),
                    None => (part, &part[part.len()..]),
                },
            })
        })
        .collect()
}

fn header_value(headers: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(headers).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_order_unknown_parts_quoted_boundary_trailing_space() {
        let body = b"--xyz\r\nContent-Type: application/rs-metadata\r\nContent-Disposition: recording-session\r\n\r\n<recording/>\r\n--xyz\r\nContent-Type: application/gtd\r\n\r\nIAM,\r\n--xyz\r\ncontent-type:application/sdp\r\n\r\nv=0\r\nm=audio 1 RTP/AVP 0\r\n\r\n--xyz--\r\n  \r\n";
        let b = split(Some("multipart/mixed; boundary=\"xyz\""), body).unwrap();
        assert_eq!(b.metadata, Some(&b"<recording/>"[..]));
        assert_eq!(b.sdp, Some(&b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"[..]));
    }

    #[test]
    fn lf_only_and_preamble() {
        let body = b"preamble\n--b1\nContent-Type: application/sdp\n\nv=0\n--b1\nContent-Type: application/rs-metadata+xml\n\n<r/>\n--b1--";
        let b = split(Some("Multipart/Mixed;boundary=b1"), body).unwrap();
        assert_eq!(b.sdp, Some(&b"v=0"[..]));
        assert_eq!(b.metadata, Some(&b"<r/>"[..]));
    }

    #[test]
    fn single_and_errors() {
        assert_eq!(split(None, b"v=0\r\n").unwrap().sdp, Some(&b"v=0\r\n"[..]));
        assert_eq!(
            split(Some("application/sdp"), b"").unwrap(),
            SiprecBody::default()
        );
        assert_eq!(
            split(Some("multipart/mixed"), b"x"),
            Err(BodyError::NoBoundary)
        );
        assert_eq!(
            split(Some("multipart/mixed;boundary=q"), b"x"),
            Err(BodyError::NoParts)
        );
        assert_eq!(
            split(Some("text/plain"), b"x"),
            Err(BodyError::Unsupported("text/plain".into()))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), b in "[a-z-]{1,5}") {
            let _ = split(Some(&format!("multipart/mixed;boundary={b}")), &body);
            let mut framed = format!("--{b}\r\n").into_bytes();
            framed.extend_from_slice(&body);
            framed.extend_from_slice(format!("\r\n--{b}--").as_bytes());
            let _ = split(Some(&format!("multipart/mixed;boundary={b}")), &framed);
        }
    }
}
