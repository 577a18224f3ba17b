//! The filters plugboard adds to minijinja's built-ins (`default`, `tojson`, `indent`, …):
//! `b64encode`, `b64decode`, `toyaml`, `required` and `sha256`. `password` lives in
//! [`super::password`]. Errors never quote the filtered value, which may come from a Secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use minijinja::value::{StringInput, Value};
use minijinja::{Environment, Error, ErrorKind, State};
use sha2::{Digest as _, Sha256};

/// Registers every filter of this module on `env`.
pub(super) fn register(env: &mut Environment<'_>) {
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("toyaml", toyaml);
    env.add_filter("required", required);
    env.add_filter("sha256", sha256);
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// `{{ s | b64encode }}`: standard base64 (with padding) of the UTF-8 text.
fn b64encode(value: StringInput<'_>) -> String {
    STANDARD.encode(value.as_str())
}

/// `{{ s | b64decode }}`: the text standard base64 encodes (as in a Secret's `data`).
fn b64decode(value: StringInput<'_>) -> Result<String, Error> {
    let bytes = STANDARD
        .decode(value.as_str())
        .map_err(|_| invalid("b64decode: the value is not valid base64"))?;
    String::from_utf8(bytes).map_err(|_| invalid("b64decode: the decoded value is not UTF-8 text"))
}

/// `{{ v | toyaml }}`: the value as YAML, without the final newline (like Helm's `toYaml`), so
/// it combines with `indent`.
fn toyaml(state: &State<'_, '_>, value: &Value) -> Result<String, Error> {
    if value.is_undefined() {
        // Fails as strict undefined does, naming the undefined expression.
        StringInput::new(state, value)?;
    }
    let yaml = serde_saphyr::to_string(value)
        .map_err(|_| invalid("toyaml: the value cannot be written as YAML"))?;
    Ok(yaml.trim_end_matches('\n').to_owned())
}

/// `{{ v | required("why it is needed") }}`: the value, or an error with that message when it
/// is undefined, none or an empty string.
fn required(value: &Value, message: Option<String>) -> Result<Value, Error> {
    let missing =
        value.is_undefined() || value.is_none() || value.as_str().is_some_and(str::is_empty);
    if missing {
        return Err(invalid(
            message.unwrap_or_else(|| "a required value is missing".to_owned()),
        ));
    }
    Ok(value.clone())
}

/// `{{ s | sha256 }}`: lowercase hex SHA-256 of the UTF-8 text.
fn sha256(value: StringInput<'_>) -> String {
    hex::encode(Sha256::digest(value.as_str().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(source: &str, value: Value) -> Result<String, Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        register(&mut env);
        env.render_str(source, minijinja::context! { v => value })
    }

    #[test]
    fn b64encode_and_b64decode_round_trip_text() {
        assert_eq!(
            run("{{ v | b64encode }}", "héllo".into()).unwrap(),
            "aMOpbGxv"
        );
        assert_eq!(
            run("{{ v | b64decode }}", "aMOpbGxv".into()).unwrap(),
            "héllo"
        );
    }

    #[test]
    fn b64decode_refuses_invalid_base64_and_binary() {
        let err = run("{{ v | b64decode }}", "not base64!".into()).unwrap_err();
        assert_eq!(
            err.detail(),
            Some("b64decode: the value is not valid base64")
        );
        let err = run("{{ v | b64decode }}", "/w==".into()).unwrap_err();
        assert_eq!(
            err.detail(),
            Some("b64decode: the decoded value is not UTF-8 text")
        );
    }

    #[test]
    fn toyaml_writes_maps_without_a_final_newline() {
        let value = Value::from(minijinja::value::Serde(
            serde_json::json!({"a": 1, "b": ["x", "z"]}),
        ));
        assert_eq!(
            run("{{ v | toyaml }}", value).unwrap(),
            "a: 1\nb:\n- x\n- z"
        );
    }

    #[test]
    fn required_passes_values_and_fails_with_the_message() {
        assert_eq!(
            run(r#"{{ v | required("x") }}"#, "ok".into()).unwrap(),
            "ok"
        );
        for missing in [Value::UNDEFINED, Value::from(()), Value::from("")] {
            let err = run(r#"{{ v | required("db is needed") }}"#, missing).unwrap_err();
            assert_eq!(err.detail(), Some("db is needed"));
        }
        let err = run("{{ v | required }}", Value::from("")).unwrap_err();
        assert_eq!(err.detail(), Some("a required value is missing"));
    }

    #[test]
    fn sha256_is_the_hex_digest_of_the_text() {
        assert_eq!(
            run("{{ v | sha256 }}", "abc".into()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
