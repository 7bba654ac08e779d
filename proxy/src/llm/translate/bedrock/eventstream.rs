//! The AWS event stream framing (`application/vnd.amazon.eventstream`)
//! that ConverseStream answers in: each message is its total length (u32
//! BE), its headers' length (u32 BE), the CRC32 of those eight bytes, the
//! headers (name length u8, name, value type u8, value), the payload, and
//! the CRC32 of everything before it. [`Decoder`] takes bytes as they come
//! (split anywhere) and yields whole messages, checking both CRCs; a bad
//! CRC, an impossible length or a stream cut mid-message is an error, after
//! which the decoder yields nothing more. [`encode`] frames a message (for
//! tests and the test upstream's twin). Knows nothing of Bedrock's events.

use bytes::{Buf, Bytes, BytesMut};

/// The prelude: total length, headers length, prelude CRC.
const PRELUDE: usize = 12;
/// The shortest message: a prelude and a message CRC.
const MIN_MESSAGE: usize = PRELUDE + 4;
/// The longest message accepted (AWS caps payloads at 16 MiB; headers at 128 KiB).
const MAX_MESSAGE: usize = 16 << 20 | 128 << 10;

/// One decoded message: the headers the gateway reads, and the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<String>,
    /// `:event-type`: `messageStart`, `contentBlockDelta`, ...
    pub event_type: Option<String>,
    /// `:exception-type` of an exception: `throttlingException`, ...
    pub exception_type: Option<String>,
    /// `:error-code` of an error message.
    pub error_code: Option<String>,
    /// `:error-message` of an error message.
    pub error_message: Option<String>,
    /// The payload (JSON for Bedrock).
    pub payload: Bytes,
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The prelude's CRC does not match.
    #[error("an event stream message has a bad prelude checksum")]
    PreludeCrc,
    /// The message's CRC does not match.
    #[error("an event stream message has a bad checksum")]
    MessageCrc,
    /// The lengths cannot be right.
    #[error("an event stream message has an invalid length")]
    Length,
    /// A header cannot be read.
    #[error("an event stream message has an unreadable header")]
    Header,
    /// The stream ended inside a message.
    #[error("the event stream ended inside a message")]
    Truncated,
}

/// Decodes messages from bytes arriving in pieces.
#[derive(Default)]
pub struct Decoder {
    pending: BytesMut,
    failed: bool,
}

impl Decoder {
    /// Takes more bytes.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.pending.extend_from_slice(data);
        }
    }

    /// The next whole message, if one is complete; after an error, `None`.
    pub fn next_message(&mut self) -> Option<Result<Message, DecodeError>> {
        if self.failed || self.pending.len() < PRELUDE {
            return None;
        }
        let total = be32(&self.pending[0..4]) as usize;
        let headers_len = be32(&self.pending[4..8]) as usize;
        if crc32(&self.pending[..8]) != be32(&self.pending[8..12]) {
            return Some(self.fail(DecodeError::PreludeCrc));
        }
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&total) || headers_len > total - MIN_MESSAGE {
            return Some(self.fail(DecodeError::Length));
        }
        if self.pending.len() < total {
            return None;
        }
        let frame = self.pending.split_to(total).freeze();
        if crc32(&frame[..total - 4]) != be32(&frame[total - 4..]) {
            return Some(self.fail(DecodeError::MessageCrc));
        }
        let mut message = match read_headers(&frame[PRELUDE..PRELUDE + headers_len]) {
            Ok(message) => message,
            Err(e) => return Some(self.fail(e)),
        };
        message.payload = frame.slice(PRELUDE + headers_len..total - 4);
        Some(Ok(message))
    }

    /// The stream ended: an error if a message was cut off.
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if !self.failed && !self.pending.is_empty() {
            self.failed = true;
            self.pending.clear();
            return Err(DecodeError::Truncated);
        }
        Ok(())
    }

    fn fail(&mut self, error: DecodeError) -> Result<Message, DecodeError> {
        self.failed = true;
        self.pending.clear();
        Err(error)
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Reads the headers; keeps the string ones the gateway needs, skips the rest.
fn read_headers(mut bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut message = Message::default();
    while bytes.has_remaining() {
        let name_len = usize::from(bytes.get_u8());
        if bytes.remaining() < name_len + 1 {
            return Err(DecodeError::Header);
        }
        let name = &bytes[..name_len];
        bytes.advance(name_len);
        let fixed = match bytes.get_u8() {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                if bytes.remaining() < 2 {
                    return Err(DecodeError::Header);
                }
                let len = usize::from(bytes.get_u16());
                if bytes.remaining() < len {
                    return Err(DecodeError::Header);
                }
                let value = &bytes[..len];
                let slot = match name {
                    b":message-type" => Some(&mut message.message_type),
                    b":event-type" => Some(&mut message.event_type),
                    b":exception-type" => Some(&mut message.exception_type),
                    b":error-code" => Some(&mut message.error_code),
                    b":error-message" => Some(&mut message.error_message),
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot = Some(String::from_utf8_lossy(value).into_owned());
                }
                bytes.advance(len);
                continue;
            }
            _ => return Err(DecodeError::Header),
        };
        if bytes.remaining() < fixed {
            return Err(DecodeError::Header);
        }
        bytes.advance(fixed);
    }
    Ok(message)
}

/// Frames a message with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The CRC-32 table (IEEE 802.3, reflected polynomial 0xEDB88320).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), as zlib and the event stream compute it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn all(decoder: &mut Decoder) -> Vec<Result<Message, DecodeError>> {
        std::iter::from_fn(|| decoder.next_message()).collect()
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn decodes_aws_published_vectors() {
        // awslabs/aws-c-event-stream test vectors: `int32_header` and
        // the empty message (`empty_message`).
        let empty = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        let mut decoder = Decoder::default();
        decoder.push(&empty);
        let message = decoder.next_message().unwrap().unwrap();
        assert!(message.payload.is_empty() && message.event_type.is_none());
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn decodes_split_at_every_byte() {
        let mut stream = event("messageStart", r#"{"role":"assistant"}"#);
        stream.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        stream.extend(encode(
            &[
                (":exception-type", "throttlingException"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        for cut in 0..=stream.len() {
            let mut decoder = Decoder::default();
            decoder.push(&stream[..cut]);
            let mut messages = all(&mut decoder);
            decoder.push(&stream[cut..]);
            messages.extend(all(&mut decoder));
            assert_eq!(decoder.finish(), Ok(()), "cut at {cut}");
            let messages: Vec<Message> = messages.into_iter().map(Result::unwrap).collect();
            assert_eq!(messages.len(), 3, "cut at {cut}");
            assert_eq!(messages[0].event_type.as_deref(), Some("messageStart"));
            assert_eq!(
                messages[1].payload.as_ref(),
                br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
            );
            assert_eq!(messages[2].message_type.as_deref(), Some("exception"));
            assert_eq!(
                messages[2].exception_type.as_deref(),
                Some("throttlingException")
            );
        }
    }

    #[test]
    fn bad_checksums_and_lengths_are_errors_not_hangs() {
        let good = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        // A flipped payload byte: the message CRC.
        let mut bad = good.clone();
        let at = bad.len() - 6;
        bad[at] ^= 1;
        let mut decoder = Decoder::default();
        decoder.push(&bad);
        assert_eq!(decoder.next_message(), Some(Err(DecodeError::MessageCrc)));
        assert_eq!(decoder.next_message(), None);
        // A flipped length byte: the prelude CRC.
        let mut bad = good.clone();
        bad[3] ^= 1;
        let mut decoder = Decoder::default();
        decoder.push(&bad);
        assert_eq!(decoder.next_message(), Some(Err(DecodeError::PreludeCrc)));
        // A consistent but impossible length.
        let mut bad = vec![0, 0, 0, 4, 0, 0, 0, 0];
        let crc = crc32(&bad);
        bad.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = Decoder::default();
        decoder.push(&bad);
        assert_eq!(decoder.next_message(), Some(Err(DecodeError::Length)));
        // Cut mid-message.
        let mut decoder = Decoder::default();
        decoder.push(&good[..good.len() - 1]);
        assert_eq!(decoder.next_message(), None);
        assert_eq!(decoder.finish(), Err(DecodeError::Truncated));
        // A header of an unknown type.
        let mut head = vec![1, b'x', 42];
        head.extend_from_slice(&[0; 4]);
        let total = (PRELUDE + head.len() + 4) as u32;
        let mut bad = total.to_be_bytes().to_vec();
        bad.extend_from_slice(&(head.len() as u32).to_be_bytes());
        let crc = crc32(&bad);
        bad.extend_from_slice(&crc.to_be_bytes());
        bad.extend_from_slice(&head);
        let crc = crc32(&bad);
        bad.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = Decoder::default();
        decoder.push(&bad);
        assert_eq!(decoder.next_message(), Some(Err(DecodeError::Header)));
    }
}
