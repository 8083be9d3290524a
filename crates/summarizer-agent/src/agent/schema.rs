//! JSON Schemas from the Rust types (schemars) and validation against them
//! (`jsonschema`). The same schema is sent to the model as its structured
//! output format and checked on whatever comes back: a model, a proxy or a
//! buggy backend may ignore the format, so it is never trusted.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

/// Most validation errors quoted back to the model: enough to fix the
/// output, short enough not to drown the prompt.
const MAX_REPORTED_ERRORS: usize = 5;

/// Why an output was refused, worded for the model that must fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOutput(pub String);

/// The compiled schema of `T`.
pub struct OutputSchema<T> {
    /// Shared with every request that sends it (no copy per call).
    schema: std::sync::Arc<serde_json::Value>,
    validator: jsonschema::Validator,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for OutputSchema<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl<T: JsonSchema + Serialize + DeserializeOwned> OutputSchema<T> {
    /// Generates and compiles the schema of `T`.
    ///
    /// # Errors
    /// When the generated schema does not compile (a bug in `T`'s derive).
    pub fn new() -> Result<Self, String> {
        let mut schema = serde_json::to_value(schemars::schema_for!(T))
            .map_err(|e| format!("schema of {}: {e}", std::any::type_name::<T>()))?;
        if let Some(object) = schema.as_object_mut() {
            // Meta keys some structured-output endpoints refuse; validation does
            // not need them.
            object.remove("$schema");
            object.remove("title");
        }
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("schema of {}: {e}", std::any::type_name::<T>()))?;
        Ok(Self {
            schema: std::sync::Arc::new(schema),
            validator,
            _type: PhantomData,
        })
    }

    /// The schema as JSON, to send to a model.
    pub fn schema(&self) -> &std::sync::Arc<serde_json::Value> {
        &self.schema
    }

    /// Parses `raw` as JSON, validates it, and deserialises it.
    ///
    /// # Errors
    /// [`InvalidOutput`] saying what is wrong, for the model to fix.
    pub fn parse(&self, raw: &str) -> Result<T, InvalidOutput> {
        let value: serde_json::Value = serde_json::from_str(strip_fences(raw))
            .map_err(|e| InvalidOutput(format!("the output is not valid JSON: {e}")))?;
        self.validate(&value)?;
        serde_json::from_value(value)
            .map_err(|e| InvalidOutput(format!("the output does not match the schema: {e}")))
    }

    /// Validates an already typed value (outputs of non-model backends).
    ///
    /// # Errors
    /// [`InvalidOutput`] listing the violations.
    pub fn check(&self, value: &T) -> Result<(), InvalidOutput> {
        let json = serde_json::to_value(value)
            .map_err(|e| InvalidOutput(format!("the output cannot be serialised: {e}")))?;
        self.validate(&json)
    }

    fn validate(&self, value: &serde_json::Value) -> Result<(), InvalidOutput> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .take(MAX_REPORTED_ERRORS)
            .map(|e| {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                };
                format!("at {at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidOutput(format!(
                "the output violates the JSON Schema: {}",
                errors.join("; ")
            )))
        }
    }
}

/// Some models wrap JSON in a Markdown code fence despite structured output.
fn strip_fences(raw: &str) -> &str {
    let trimmed = raw.trim();
    trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(trimmed, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        /// A count.
        n: u32,
        names: Vec<String>,
    }

    fn schema() -> Option<OutputSchema<Probe>> {
        OutputSchema::new().ok()
    }

    #[test]
    fn valid_output_parses_even_inside_a_code_fence() {
        let parsed = schema().map(|s| s.parse("```json\n{\"n\": 2, \"names\": [\"a\"]}\n```"));
        assert_eq!(
            parsed,
            Some(Ok(Probe {
                n: 2,
                names: vec!["a".into()]
            }))
        );
    }

    #[test]
    fn invalid_output_is_refused_with_a_reason_the_model_can_use() {
        let cases = [
            ("{\"n\": 2,", "not valid JSON"),
            ("{\"n\": -1, \"names\": []}", "/n"),
            ("{\"names\": []}", "\"n\" is a required property"),
            ("{\"n\": 1, \"names\": [], \"extra\": true}", "extra"),
        ];
        for (raw, expected) in cases {
            let err = schema().map(|s| s.parse(raw));
            let message = match err {
                Some(Err(InvalidOutput(message))) => message,
                other => panic!("{raw}: expected an error, got {other:?}"),
            };
            assert!(message.contains(expected), "{raw}: {message}");
        }
    }
}
