//! An invocation's input: one JSON document; empty means `{}`.

/// An input that is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("malformed input: not JSON ({0})")]
pub struct InputError(#[from] serde_json::Error);

/// Parses an invocation input; empty (or blank) means `{}`.
pub fn parse(input: &str) -> Result<serde_json::Value, InputError> {
    if input.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    Ok(serde_json::from_str(input)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_is_an_empty_object_and_garbage_is_refused() {
        assert_eq!(super::parse("  ").unwrap(), serde_json::json!({}));
        assert_eq!(super::parse("[1]").unwrap(), serde_json::json!([1]));
        let e = super::parse("{nope").unwrap_err();
        assert!(
            e.to_string().starts_with("malformed input: not JSON"),
            "{e}"
        );
    }
}
