//! Every event type's JSON as first written must still decode: old events stay readable
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on a broken fixture"
)]
//! after the types change (an upcaster handles older schema versions).

use std::path::Path;

use keyledger_events::EventPayload;
use keyledger_events::api_key::ApiKeyEvent;
use keyledger_events::audit::AuditEvent;
use keyledger_events::license::{HeartbeatEvent, LicenseEvent, UsageEvent};
use keyledger_events::request::RequestEvent;
use keyledger_events::session::SessionEvent;
use keyledger_events::user::{RefreshFamilyEvent, UserEvent};
use serde_json::Value;

fn fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            serde_json::from_str(&text).unwrap(),
        ));
    }
    out
}

fn decodes(event_type: &str, schema_version: i32, data: Value) -> bool {
    let as_license = LicenseEvent::decode_parts(event_type, schema_version, data.clone());
    let as_usage = UsageEvent::decode_parts(event_type, schema_version, data.clone());
    let as_session = SessionEvent::decode_parts(event_type, schema_version, data.clone());
    let as_heartbeat = HeartbeatEvent::decode_parts(event_type, schema_version, data.clone());
    let as_user = UserEvent::decode_parts(event_type, schema_version, data.clone());
    let as_family = RefreshFamilyEvent::decode_parts(event_type, schema_version, data.clone());
    let as_api_key = ApiKeyEvent::decode_parts(event_type, schema_version, data.clone());
    let as_request = RequestEvent::decode_parts(event_type, schema_version, data.clone());
    let as_audit = AuditEvent::decode_parts(event_type, schema_version, data);
    matches!(as_request, Ok(Some(_)))
        || matches!(as_audit, Ok(Some(_)))
        || matches!(as_api_key, Ok(Some(_)))
        || matches!(as_user, Ok(Some(_)))
        || matches!(as_family, Ok(Some(_)))
        || matches!(as_heartbeat, Ok(Some(_)))
        || matches!(as_license, Ok(Some(_)))
        || matches!(as_usage, Ok(Some(_)))
        || matches!(as_session, Ok(Some(_)))
}

#[test]
fn every_stored_fixture_still_decodes() {
    for (file, fixture) in fixtures() {
        let event_type = fixture["event_type"].as_str().unwrap();
        let schema_version = fixture["schema_version"].as_i64().unwrap() as i32;
        assert!(
            decodes(event_type, schema_version, fixture["data"].clone()),
            "{file} no longer decodes"
        );
    }
}

#[test]
fn every_event_type_has_a_fixture() {
    let files: Vec<String> = fixtures().into_iter().map(|(f, _)| f).collect();
    for event_type in LicenseEvent::EVENT_TYPES
        .iter()
        .chain(UsageEvent::EVENT_TYPES)
        .chain(SessionEvent::EVENT_TYPES)
        .chain(HeartbeatEvent::EVENT_TYPES)
        .chain(RequestEvent::EVENT_TYPES)
        .chain(UserEvent::EVENT_TYPES)
        .chain(RefreshFamilyEvent::EVENT_TYPES)
        .chain(ApiKeyEvent::EVENT_TYPES)
        .chain(AuditEvent::EVENT_TYPES)
    {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("{event_type}.v"))),
            "add tests/fixtures/{event_type}.v1.json with the event as first written"
        );
    }
}

#[test]
fn a_current_event_encodes_to_its_fixture_shape() {
    for (file, fixture) in fixtures() {
        let event_type = fixture["event_type"].as_str().unwrap();
        let data = fixture["data"].clone();
        let encoded = if let Ok(Some(e)) = LicenseEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = UsageEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = SessionEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = HeartbeatEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = RequestEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = UserEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = RefreshFamilyEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = ApiKeyEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else if let Ok(Some(e)) = AuditEvent::decode_parts(event_type, 1, data.clone()) {
            e.to_new_event(uuid::Uuid::nil()).data
        } else {
            panic!("{file} does not decode");
        };
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&encoded), keys(&data), "{file}: fields changed");
    }
}
