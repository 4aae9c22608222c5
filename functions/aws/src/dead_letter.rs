//! Where an event goes that can never be processed: an SQS dead-letter queue.
//!
//! Why: a malformed event (truncated JSON, a digest that is not a digest) fails the same way
//! on every attempt. Returning an error would make Lambda retry it until its retries run out,
//! and an SQS-fed function would keep it in flight forever, blocking its batch. So a function
//! that cannot parse an event parks it here and reports success. The body is sent byte for
//! byte as received, so an operator can read it, fix the cause and redrive it unchanged; why it
//! was parked travels beside it as message attributes (`reason`, and `event_id` when the event
//! had a readable id), never mixed into the body.
//!
//! The queue is a standard queue (a FIFO queue would need a message group id).

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::MessageAttributeValue;

/// The attribute telling why the event was parked.
pub const REASON_ATTRIBUTE: &str = "reason";
/// The attribute holding the event's id, when it had one.
pub const EVENT_ID_ATTRIBUTE: &str = "event_id";
/// The longest `reason` kept, in bytes: enough for a parse error with its path, small against
/// the message size limit, which counts attributes too.
pub const MAX_REASON_BYTES: usize = 1024;
/// The longest `event_id` kept, in bytes (EventBridge ids are 36).
pub const MAX_EVENT_ID_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The body cannot be sent unchanged: SQS refuses it as it is.
    #[error("event cannot be parked unchanged: {0}")]
    Unsendable(String),
    /// The queue refused the message or could not be reached.
    #[error("dead-letter queue {queue_url}: SendMessage failed: {message}")]
    Send { queue_url: String, message: String },
}

/// The dead-letter queue of one function.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    client: Client,
    queue_url: String,
}

impl DeadLetterQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends `body` unchanged, with why (`reason`, shortened to [`MAX_REASON_BYTES`]) and, when
    /// known, the event's id as String message attributes.
    pub async fn park(
        &self,
        body: &str,
        event_id: Option<&str>,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        check_body(body)?;
        let reason = attribute_text(reason, MAX_REASON_BYTES);
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes(
                REASON_ATTRIBUTE,
                string_attribute(if reason.is_empty() {
                    "unspecified"
                } else {
                    &reason
                })?,
            );
        if let Some(id) = event_id.map(|id| attribute_text(id, MAX_EVENT_ID_BYTES))
            && !id.is_empty()
        {
            request = request.message_attributes(EVENT_ID_ATTRIBUTE, string_attribute(&id)?);
        }
        request.send().await.map_err(|e| DeadLetterError::Send {
            queue_url: self.queue_url.clone(),
            message: service_message(&e),
        })?;
        Ok(())
    }
}

/// Whether SQS accepts `c` in a message body or attribute value: `#x9 | #xA | #xD | #x20` to
/// `#xD7FF | #xE000` to `#xFFFD | #x10000` to `#x10FFFF` (a `char` is never a surrogate).
pub fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

fn check_body(body: &str) -> Result<(), DeadLetterError> {
    if body.is_empty() {
        return Err(DeadLetterError::Unsendable("the body is empty".into()));
    }
    match body.char_indices().find(|(_, c)| !sqs_allows(*c)) {
        Some((at, c)) => Err(DeadLetterError::Unsendable(format!(
            "the body has character U+{:04X} at byte {at}, which SQS does not accept",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

/// `text` made safe for an attribute value: characters SQS refuses replaced by U+FFFD, cut at a
/// character boundary to at most `max_bytes` bytes, ending in `…` when cut.
pub fn attribute_text(text: &str, max_bytes: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if sqs_allows(c) { c } else { '\u{FFFD}' })
        .collect();
    if clean.len() <= max_bytes {
        return clean;
    }
    let budget = max_bytes.saturating_sub('…'.len_utf8());
    let mut cut = budget;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = clean[..cut].to_owned();
    out.push('…');
    out
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, DeadLetterError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| DeadLetterError::Unsendable(format!("message attribute: {e}")))
}

fn service_message(error: &(impl std::error::Error + ProvideErrorMetadata)) -> String {
    crate::service_error::describe(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_are_kept_as_they_are() {
        assert_eq!(
            attribute_text("missing field `detail`", MAX_REASON_BYTES),
            "missing field `detail`"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary_and_marked() {
        let long = "é".repeat(2000); // 4000 bytes, two per character
        let cut = attribute_text(&long, MAX_REASON_BYTES);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
        assert!(
            cut.len() > MAX_REASON_BYTES - 4,
            "uses the budget: {}",
            cut.len()
        );
    }

    #[test]
    fn characters_sqs_refuses_are_replaced_in_attributes_and_refused_in_bodies() {
        assert_eq!(
            attribute_text("bad\u{0}byte\u{FFFF}", 64),
            "bad\u{FFFD}byte\u{FFFD}"
        );
        assert_eq!(attribute_text("tab\tok\r\n", 64), "tab\tok\r\n");
        assert!(check_body("{\"id\": 1}\n").is_ok());
        assert!(check_body("🚀 {").is_ok(), "astral characters are allowed");
        let err = check_body("{\"a\":\u{1}").expect_err("control character");
        assert!(err.to_string().contains("U+0001 at byte 5"), "{err}");
        assert!(matches!(
            check_body(""),
            Err(DeadLetterError::Unsendable(_))
        ));
    }
}
