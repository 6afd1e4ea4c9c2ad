//! Redaction before anything is stored or logged: license keys in free text become their
//! display prefix followed by `…`; JSON members named like a secret (key, password, token,
//! secret, authorization) become `"[REDACTED]"`; bodies are truncated to a bound.

use std::borrow::Cow;

const KEY_PREFIX: &str = "lic_";
/// Characters of the key body kept, as in the stored display prefix.
const KEPT: usize = 8;
/// Shorter runs are not keys (a key body is about 49 characters).
const MIN_BODY: usize = 20;

fn is_base58(b: u8) -> bool {
    b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l')
}

/// Replaces every `lic_…` key in `text` with its display prefix.
pub fn redact_license_keys(text: &str) -> Cow<'_, str> {
    if !text.contains(KEY_PREFIX) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        if text[i..].starts_with(KEY_PREFIX) {
            let body_start = i + KEY_PREFIX.len();
            let body_len = bytes[body_start..]
                .iter()
                .take_while(|b| is_base58(**b))
                .count();
            if body_len >= MIN_BODY {
                out.push_str(&text[i..body_start + KEPT]);
                out.push('…');
                i = body_start + body_len;
                changed = true;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Legacy keys (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`) in free text become their first group.
fn redact_legacy_keys(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let key_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let is_key_at = |i: usize| {
        i + 29 <= bytes.len()
            && (0..29).all(|j| {
                if j % 6 == 5 {
                    bytes[i + j] == b'-'
                } else {
                    key_char(bytes[i + j])
                }
            })
            && (i == 0 || !key_char(bytes[i - 1]))
            && (i + 29 == bytes.len() || !key_char(bytes[i + 29]))
    };
    if !(0..bytes.len()).any(is_key_at) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_key_at(i) {
            out.push_str(&text[i..i + 6]);
            out.push('…');
            i += 29;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    Cow::Owned(out)
}

/// Whether a JSON member's name marks a secret: one of its words is key, password, token,
/// secret or authorization (`api_key`, `accessToken`, `X-Secret`), unless it only names a
/// harmless view of one (`key_prefix`, `token_id`, `key_hash`).
pub fn is_secret_name(name: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for ch in name.chars() {
        if !ch.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if ch.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        current.push(ch.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    const SECRET: [&str; 9] = [
        "key",
        "apikey",
        "password",
        "passwd",
        "token",
        "secret",
        "authorization",
        "credential",
        "credentials",
    ];
    const HARMLESS: [&str; 4] = ["prefix", "id", "hash", "type"];
    let secret = words.iter().any(|w| SECRET.contains(&w.as_str()));
    let harmless = words.last().is_some_and(|w| HARMLESS.contains(&w.as_str()));
    secret && !harmless
}

/// Redacts secret members at every depth, and keys inside any string.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            for (name, member) in members.iter_mut() {
                // A null stays null (in a merge patch it removes the member).
                if is_secret_name(name) && !member.is_null() {
                    *member = serde_json::Value::String("[REDACTED]".into());
                } else {
                    redact_json(member);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::String(text) => {
            let redacted = redact_text(text);
            if redacted != *text {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// Keys of both shapes in free text become their display prefix; a NUL character (which
/// PostgreSQL's text cannot hold) becomes U+FFFD, like bytes that are not UTF-8.
pub fn redact_text(text: &str) -> String {
    redact_legacy_keys(&redact_license_keys(text)).replace('\0', "\u{FFFD}")
}

/// A body as stored in the request log: redacted (as JSON when it parses), then cut to
/// `limit` characters.
pub fn redact_body(body: &[u8], limit: usize) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            redact_json(&mut value);
            value.to_string()
        }
        Err(_) => redact_text(&String::from_utf8_lossy(body)),
    };
    truncate(&text, limit)
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…[truncated]", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_members_are_redacted_at_every_depth() {
        let mut value = json!({
            "key": "lic_abc", "Password": "hunter2", "nested": {"api_key": "x", "accessToken": "y",
            "list": [{"client_secret": "z"}], "Authorization": "Bearer t"},
            "key_prefix": "lic_4vJ9hGq2", "owner": "acme", "token_id": 7
        });
        redact_json(&mut value);
        assert_eq!(value["key"], "[REDACTED]");
        assert_eq!(value["Password"], "[REDACTED]");
        assert_eq!(value["nested"]["api_key"], "[REDACTED]");
        assert_eq!(value["nested"]["accessToken"], "[REDACTED]");
        assert_eq!(value["nested"]["list"][0]["client_secret"], "[REDACTED]");
        assert_eq!(value["nested"]["Authorization"], "[REDACTED]");
        assert_eq!(value["key_prefix"], "lic_4vJ9hGq2");
        assert_eq!(value["owner"], "acme");
        assert_eq!(value["token_id"], 7);
    }

    #[test]
    fn keys_anywhere_in_a_body_become_their_prefix() {
        let body = br#"{"note": "customer sent lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ and K3DEG-ZDPCF-54ERF-5DHQD-3DQCJ"}"#;
        let stored = redact_body(body, 2000);
        assert!(stored.contains("lic_4vJ9hGq2…"), "{stored}");
        assert!(stored.contains("K3DEG-…"), "{stored}");
        assert!(!stored.contains("r7mXkP3sT8"));
        assert!(!stored.contains("ZDPCF"));
        let text = redact_body(b"plain K3DEG-ZDPCF-54ERF-5DHQD-3DQCJ text", 2000);
        assert_eq!(text, "plain K3DEG-… text");
    }

    #[test]
    fn bodies_are_cut_to_the_limit() {
        let stored = redact_body("é".repeat(50).as_bytes(), 10);
        assert_eq!(stored, format!("{}…[truncated]", "é".repeat(10)));
    }

    #[test]
    fn keys_in_text_become_their_display_prefix() {
        let key = "lic_4vJ9hGq2r7mXkP3sT8wYzA1bC5dE6fH7jK8mN9pQ";
        let text = format!("unknown variant `{key}`, expected one of");
        assert_eq!(
            redact_license_keys(&text),
            "unknown variant `lic_4vJ9hGq2…`, expected one of"
        );
    }

    #[test]
    fn text_without_keys_is_untouched() {
        assert_eq!(
            redact_license_keys("lic_short and ünïcode"),
            "lic_short and ünïcode"
        );
    }
}
