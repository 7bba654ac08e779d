//! Incremental server-sent-events handling for OpenAI-style streams (chat
//! and text completions, and the Responses API's `response.*` events, whose
//! usage comes in `response.completed`): splits
//! the byte stream into whole events, reads usage from the usage chunk, and,
//! when the gateway itself asked for `include_usage`, removes the usage chunk
//! and the `"usage":null` fields the client did not ask for. Events are
//! forwarded as soon as they are complete; bytes are copied only when an
//! event straddles two reads or must be rewritten.

use bytes::{Bytes, BytesMut};

use super::usage::{find, find_usage};
use crate::telemetry::Usage;

/// Per-stream state.
#[derive(Default)]
pub struct SseState {
    /// Bytes of an incomplete event.
    pending: BytesMut,
    /// Remove usage the client did not ask for.
    strip_usage: bool,
    /// Usage from the usage chunk, once seen.
    pub usage: Option<Usage>,
    /// Data events forwarded, other than `[DONE]` and the usage chunk: about
    /// one token each, the estimate when a stream ends without usage.
    pub content_events: u64,
    /// Whether `[DONE]` was seen.
    pub done: bool,
}

impl SseState {
    /// A new stream; `strip_usage` when the gateway injected `include_usage`.
    pub fn new(strip_usage: bool) -> Self {
        Self {
            strip_usage,
            ..Self::default()
        }
    }

    /// Like [`on_data`](Self::on_data), asking `allow(n)` before the n-th
    /// content event goes out: at the first refusal that event and the rest
    /// of the read are dropped and `Err` carries what was forwarded.
    pub fn on_data_gated(
        &mut self,
        data: Bytes,
        allow: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Bytes, Bytes> {
        self.pending.extend_from_slice(&data);
        let Some(end) = last_boundary(&self.pending) else {
            return Ok(Bytes::new());
        };
        let complete = self.pending.split_to(end).freeze();
        let mut out = BytesMut::with_capacity(complete.len());
        let mut rest: &[u8] = &complete;
        while let Some(len) = next_event_len(rest) {
            let (event, tail) = rest.split_at(len);
            rest = tail;
            let before = self.content_events;
            let usage_only = self.inspect(event);
            if self.content_events > before && !allow(self.content_events) {
                self.content_events = before;
                self.pending.clear();
                return Err(out.freeze());
            }
            if usage_only && self.strip_usage {
                continue; // the usage chunk the client did not ask for
            }
            if self.strip_usage {
                strip_usage_null(event, &mut out);
            } else {
                out.extend_from_slice(event);
            }
        }
        Ok(out.freeze())
    }

    /// Takes a chunk from upstream; returns the bytes to forward now (possibly empty).
    pub fn on_data(&mut self, data: Bytes) -> Bytes {
        if self.pending.is_empty() && !self.strip_usage && ends_with_boundary(&data) {
            // Fast path: whole events, forwarded untouched.
            self.inspect_all(&data);
            return data;
        }
        self.pending.extend_from_slice(&data);
        let Some(end) = last_boundary(&self.pending) else {
            return Bytes::new();
        };
        let complete = self.pending.split_to(end).freeze();
        if !self.strip_usage {
            self.inspect_all(&complete);
            return complete;
        }
        let mut out = BytesMut::with_capacity(complete.len());
        let mut rest: &[u8] = &complete;
        while let Some(len) = next_event_len(rest) {
            let (event, tail) = rest.split_at(len);
            rest = tail;
            if self.inspect(event) {
                continue; // the usage chunk the client did not ask for
            }
            strip_usage_null(event, &mut out);
        }
        out.freeze()
    }

    /// At the end of the upstream body: any trailing partial event, as is.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.pending).freeze()
    }

    fn inspect_all(&mut self, mut data: &[u8]) {
        while let Some(len) = next_event_len(data) {
            self.inspect(&data[..len]);
            data = &data[len..];
        }
    }

    /// Reads one event; returns whether it is a usage-only chunk.
    fn inspect(&mut self, event: &[u8]) -> bool {
        let Some(data) = event_data(event) else {
            return false;
        };
        if data.starts_with(b"[DONE]") {
            self.done = true;
            return false;
        }
        if find(data, b"\"usage\"").is_some() {
            if let Some(usage) = find_usage(data) {
                self.usage = Some(usage);
                if is_usage_only(data) {
                    return true;
                }
            }
        }
        self.content_events += 1;
        false
    }
}

/// `"choices":[]`, allowing spaces.
fn is_usage_only(data: &[u8]) -> bool {
    let Some(at) = find(data, b"\"choices\"") else {
        return true;
    };
    let rest: Vec<u8> = data[at + 9..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .take(3)
        .collect();
    rest == b":[]"
}

/// The payload of an event's first `data:` line.
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let mut rest = event;
    loop {
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(data) = line.strip_prefix(b"data:") {
            let data = data.strip_prefix(b" ").unwrap_or(data);
            return Some(data.strip_suffix(b"\r").unwrap_or(data));
        }
        if line_end >= rest.len() {
            return None;
        }
        rest = &rest[line_end + 1..];
    }
}

/// Copies `event` into `out` without `,"usage":null` / `"usage":null,`.
fn strip_usage_null(event: &[u8], out: &mut BytesMut) {
    const WITH_COMMA_BEFORE: &[u8] = b",\"usage\":null";
    const WITH_COMMA_AFTER: &[u8] = b"\"usage\":null,";
    let mut rest = event;
    loop {
        let before = find(rest, WITH_COMMA_BEFORE).map(|i| (i, WITH_COMMA_BEFORE.len()));
        let after = find(rest, WITH_COMMA_AFTER).map(|i| (i, WITH_COMMA_AFTER.len()));
        let Some((at, len)) = before.into_iter().chain(after).min_by_key(|(i, _)| *i) else {
            out.extend_from_slice(rest);
            return;
        };
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + len..];
    }
}

/// Whether `data` ends at an event boundary (a blank line).
fn ends_with_boundary(data: &[u8]) -> bool {
    data.ends_with(b"\n\n") || data.ends_with(b"\n\r\n")
}

/// Length of the first complete event (including its blank line).
pub(crate) fn next_event_len(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = memchr::memchr(b'\n', &data[i..]) {
        let nl = i + pos;
        match data.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if data.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// End of the last complete event.
pub(crate) fn last_boundary(data: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut at = 0;
    while let Some(len) = next_event_len(&data[at..]) {
        at += len;
        end = Some(at);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(state: &mut SseState, pieces: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&state.on_data(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&state.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn passes_through_and_reads_usage() {
        let whole = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let mut state = SseState::new(false);
        assert_eq!(run(&mut state, &[whole.as_bytes()]), whole);
        assert_eq!(
            state.usage,
            Some(Usage {
                input: 7,
                output: 2,
                cached_input: 0
            })
        );
        assert_eq!(state.content_events, 2);
        assert!(state.done);
    }

    #[test]
    fn strips_injected_usage_even_when_split_anywhere() {
        let whole = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let expected = format!(
            "{}{}{DONE}",
            CHUNK.replace(",\"usage\":null", ""),
            CHUNK.replace(",\"usage\":null", "")
        );
        for split in 1..whole.len() {
            let (a, b) = whole.as_bytes().split_at(split);
            let mut state = SseState::new(true);
            assert_eq!(run(&mut state, &[a, b]), expected, "split at {split}");
            assert_eq!(
                state.usage,
                Some(Usage {
                    input: 7,
                    output: 2,
                    cached_input: 0
                })
            );
            assert_eq!(state.content_events, 2);
        }
    }

    #[test]
    fn handles_crlf_and_byte_by_byte_input() {
        let whole = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let bytes: Vec<&[u8]> = whole.as_bytes().chunks(1).collect();
        let mut state = SseState::new(true);
        assert_eq!(run(&mut state, &bytes), "data: [DONE]\r\n\r\n");
        assert_eq!(
            state.usage,
            Some(Usage {
                input: 1,
                output: 1,
                cached_input: 0
            })
        );
    }

    #[test]
    fn keeps_a_trailing_partial_event() {
        let mut state = SseState::new(false);
        assert_eq!(
            run(&mut state, &[CHUNK.as_bytes(), b"data: {\"trunc"]),
            format!("{CHUNK}data: {{\"trunc")
        );
    }

    #[test]
    fn never_panics_on_arbitrary_streams() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: &[u8] = b"data: {}[]\"usage\":null,choices\r\n[DONE]";
        for _ in 0..5_000 {
            let mut state = SseState::new(rng.bool());
            for _ in 0..rng.usize(1..8) {
                let chunk: Vec<u8> = (0..rng.usize(0..64))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect();
                let _ = state.on_data(Bytes::from(chunk));
            }
            let _ = state.finish();
        }
    }
}

#[cfg(test)]
mod gated_tests {
    use super::*;

    #[test]
    fn a_refused_content_event_and_the_rest_are_held_back() {
        let mut state = SseState::new(false);
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\n";
        let mut allow = |n: u64| n <= 2;
        let out = state
            .on_data_gated(Bytes::from_static(stream.as_bytes()), &mut allow)
            .unwrap_err();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("\"a\"") && text.contains("\"b\"") && !text.contains("\"c\""));
        assert_eq!(state.content_events, 2, "only what went out counts");
        let mut all = |_: u64| true;
        let more = state
            .on_data_gated(Bytes::from_static(b"data: [DONE]\n\n"), &mut all)
            .unwrap();
        assert_eq!(&more[..], b"data: [DONE]\n\n");
    }
}
