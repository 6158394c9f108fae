//! Validates the guest's stdout against the response format and encodes it for the result.

use base64::Engine as _;
use serde_json::value::RawValue;

use crate::config::ResponseFormat;
use crate::error::Fault;

/// The output as it goes into the result's `output` field: always a JSON value.
pub fn encode(stdout: &[u8], format: ResponseFormat) -> Result<Box<RawValue>, Fault> {
    match format {
        ResponseFormat::Text => {
            let text = std::str::from_utf8(stdout).map_err(|error| Fault::InvalidUtf8 {
                valid_up_to: error.valid_up_to(),
            })?;
            Ok(json_string(text))
        }
        ResponseFormat::Json => {
            let text = std::str::from_utf8(stdout).map_err(|error| Fault::InvalidUtf8 {
                valid_up_to: error.valid_up_to(),
            })?;
            // RawValue keeps the guest's document verbatim (numbers beyond f64 keep their
            // digits); only surrounding whitespace such as println!'s newline is dropped.
            serde_json::from_str::<Box<RawValue>>(text)
                .map_err(|error| Fault::InvalidJson(error.to_string()))
        }
        ResponseFormat::Bytes => Ok(json_string(
            &base64::engine::general_purpose::STANDARD.encode(stdout),
        )),
    }
}

fn json_string(text: &str) -> Box<RawValue> {
    // Serializing a &str cannot fail; `null` is only a type-level fallback.
    serde_json::value::to_raw_value(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_must_be_utf8() {
        assert_eq!(
            encode(b"hi \"there\"\n", ResponseFormat::Text)
                .unwrap()
                .get(),
            r#""hi \"there\"\n""#
        );
        assert_eq!(
            encode(b"ok\xff", ResponseFormat::Text).unwrap_err(),
            Fault::InvalidUtf8 { valid_up_to: 2 }
        );
    }

    #[test]
    fn json_is_kept_verbatim_and_must_parse() {
        let raw = encode(
            b" {\"big\": 123456789012345678901234567890}\n",
            ResponseFormat::Json,
        )
        .unwrap();
        assert_eq!(raw.get(), "{\"big\": 123456789012345678901234567890}");
        let error = encode(b"not json", ResponseFormat::Json).unwrap_err();
        assert_eq!(error.kind(), "invalidJson");
        assert_eq!(
            encode(b"", ResponseFormat::Json).unwrap_err().kind(),
            "invalidJson"
        );
    }

    #[test]
    fn bytes_are_base64() {
        assert_eq!(
            encode(&[0, 255, 1], ResponseFormat::Bytes).unwrap().get(),
            "\"AP8B\""
        );
    }
}
