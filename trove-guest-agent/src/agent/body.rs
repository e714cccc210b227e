//! Strict JSON body parsing with errors that name the problem and the field.

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::ApiError;
use crate::api::kinds;

/// What the body is, for messages ("a snapshot document").
pub(crate) struct Expecting {
    pub(crate) what: &'static str,
    /// Whether an empty body means `{}`.
    pub(crate) empty_is_default: bool,
}

/// Parses `bytes` as `T`.
///
/// Not JSON → `400 malformed_json`; JSON of the wrong shape → `422 invalid_document` (or
/// `unknown_datastore` for a malformed datastore name, `unknown_action` for an unknown action),
/// with the path of the offending field. A well-formed datastore name core does not know parses
/// (it may be served by a backend of its own); the agent refuses it when it is not the one it
/// serves.
pub(crate) fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    expecting: Expecting,
) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        if expecting.empty_is_default {
            b"{}"
        } else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                kinds::MALFORMED_JSON,
                format!(
                    "malformed JSON: the body is empty; expected {}",
                    expecting.what
                ),
            ));
        }
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(classify(&inner, &path, expecting.what));
        }
    };
    de.end().map_err(|e| classify(&e, "", expecting.what))?;
    Ok(value)
}

fn classify(e: &serde_json::Error, path: &str, what: &str) -> ApiError {
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            kinds::MALFORMED_JSON,
            format!("malformed JSON: {e}; expected {what}"),
        ),
        Category::Data => {
            let msg = e.to_string();
            let at = if path.is_empty() || path == "." {
                String::new()
            } else {
                format!(" at {path}")
            };
            let (kind, text) = if msg.contains("is not a datastore name") {
                (
                    kinds::UNKNOWN_DATASTORE,
                    format!("unknown datastore{at}: {msg}"),
                )
            } else if msg.contains("unknown variant") && msg.contains("`detach_replication`") {
                (kinds::UNKNOWN_ACTION, format!("unknown action{at}: {msg}"))
            } else {
                (
                    kinds::INVALID_DOCUMENT,
                    format!("invalid {what}{at}: {msg}"),
                )
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, kind, text).with_field(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use trove_guest_core::SnapshotDocument;
    use trove_guest_core::wire::InstanceAction;

    use super::*;

    const DOC: Expecting = Expecting {
        what: "a snapshot document",
        empty_is_default: false,
    };

    fn doc_with_datastore(ds: &str) -> String {
        format!(
            r#"{{"master":{{"host":"127.0.0.1","port":3306}},
               "dataset":{{"datastore":"{ds}","datastore_version":"10.11","dataset_size":1,
                           "snapshot_href":"file:///tmp/x.snap"}},
               "binlog_position":{{"log_file":"mysql-bin.000001","log_position":4}}}}"#
        )
    }

    #[test]
    fn truncated_json_is_malformed() {
        let e = parse::<SnapshotDocument>(br#"{"master": {"host": "#, DOC).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.detail.kind, kinds::MALFORMED_JSON);
        assert!(e.detail.message.contains("EOF"), "{}", e.detail.message);
    }

    #[test]
    fn trailing_garbage_is_malformed() {
        let body = format!("{} x", doc_with_datastore("mariadb"));
        let e = parse::<SnapshotDocument>(body.as_bytes(), DOC).unwrap_err();
        assert_eq!(e.detail.kind, kinds::MALFORMED_JSON);
    }

    #[test]
    fn malformed_datastore_name_is_named_with_its_field() {
        let e =
            parse::<SnapshotDocument>(doc_with_datastore("Mongo DB").as_bytes(), DOC).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.detail.kind, kinds::UNKNOWN_DATASTORE);
        assert_eq!(e.detail.field.as_deref(), Some("dataset.datastore"));
        assert!(
            e.detail.message.contains("Mongo DB"),
            "{}",
            e.detail.message
        );
    }

    #[test]
    fn well_formed_unknown_datastore_parses_as_other() {
        let d: SnapshotDocument = parse(doc_with_datastore("mongodb").as_bytes(), DOC).unwrap();
        assert_eq!(d.dataset.datastore.as_str(), "mongodb");
        assert!(!d.dataset.datastore.is_known());
    }

    #[test]
    fn known_datastore_parses() {
        let d: SnapshotDocument = parse(doc_with_datastore("mariadb").as_bytes(), DOC).unwrap();
        assert_eq!(d.dataset.datastore.as_str(), "mariadb");
    }

    #[test]
    fn missing_field_is_an_invalid_document() {
        let e = parse::<SnapshotDocument>(br#"{"master":{"host":"h","port":1}}"#, DOC).unwrap_err();
        assert_eq!(e.detail.kind, kinds::INVALID_DOCUMENT);
        assert!(e.detail.message.contains("dataset"), "{}", e.detail.message);
    }

    #[test]
    fn unknown_action_is_named() {
        let e = parse::<InstanceAction>(
            br#"{"restart": {}}"#,
            Expecting {
                what: "an action document",
                empty_is_default: false,
            },
        )
        .unwrap_err();
        assert_eq!(e.detail.kind, kinds::UNKNOWN_ACTION);
        assert!(e.detail.message.contains("restart"), "{}", e.detail.message);
    }

    #[test]
    fn empty_body_is_the_default_where_allowed() {
        let c: crate::api::SnapshotCall = parse(
            b"",
            Expecting {
                what: "snapshot options",
                empty_is_default: true,
            },
        )
        .unwrap();
        assert_eq!(c, crate::api::SnapshotCall::default());
    }
}
