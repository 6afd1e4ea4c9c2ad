//! Client metadata (licenses, validations, installations, sessions): a JSON object of at most
//! 16 KiB, with members named like a secret redacted before it reaches the log.

use keyledger_api::ApiError;
use serde_json::Value;

pub const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn parse_metadata(value: Option<Value>) -> Result<Value, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(mut object @ Value::Object(_)) => {
            keyledger_api::redact_json(&mut object);
            let size = serde_json::to_vec(&object).map_or(usize::MAX, |v| v.len());
            if size > MAX_METADATA_BYTES {
                return Err(ApiError::invalid_field(
                    "metadata",
                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
                ));
            }
            Ok(object)
        }
        Some(_) => Err(ApiError::invalid_field("metadata", "must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_is_an_object_without_secrets_and_of_bounded_size() {
        assert_eq!(parse_metadata(None).unwrap(), json!({}));
        assert_eq!(
            parse_metadata(Some(json!({"plan": "x", "api_key": "k"}))).unwrap(),
            json!({"plan": "x", "api_key": "[REDACTED]"})
        );
        assert!(parse_metadata(Some(json!([1]))).is_err());
        assert!(parse_metadata(Some(json!({"x": "y".repeat(MAX_METADATA_BYTES)}))).is_err());
    }
}
