use super::*;
use plugboard_sdk::serde_json::json;
use plugboard_sdk::testing::{self, Harness};

fn config(namespace: &str, name: &str, data: &[(&str, &str)]) -> HookResult<Values> {
    let mut input = ConfigInput::new(
        Side::Socket,
        testing::plug(namespace, name, json!({"socket": {"name": "postgres"}})),
        testing::socket("databases", "postgres", json!({})),
    );
    for (k, v) in data {
        input = input.with_plug_data(*k, *v);
    }
    Harness::new(Database).config(input)
}

#[test]
fn names_come_from_the_plug_and_are_stable() {
    let first = config("shop", "web-app", &[]).unwrap();
    assert_eq!(first, config("shop", "web-app", &[]).unwrap());
    let db = &first["database"];
    assert!(db.starts_with("shop_web_app_"), "{db}");
    assert_eq!(db.len(), "shop_web_app_".len() + 8);
    assert_eq!(first["user"], *db);
    assert!(first["objectName"].starts_with("db-shop-web-app-"));
}

#[test]
fn different_plugs_get_different_names_even_when_folding_makes_them_alike() {
    let a = config("shop", "web-app", &[]).unwrap();
    let b = config("shop", "web.app", &[]).unwrap();
    let c = config("shop-web", "app", &[]).unwrap();
    assert_ne!(a["database"], b["database"]);
    assert_ne!(a["database"], c["database"]);
    assert_ne!(a["objectName"], b["objectName"]);
}

#[test]
fn long_names_are_truncated_to_valid_identifiers_and_object_names() {
    let long = "x".repeat(200);
    let out = config(&long, &long, &[]).unwrap();
    assert!(out["database"].len() <= 63);
    assert!(out["objectName"].len() <= 63);
    let valid_dns = out["objectName"]
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    assert!(valid_dns, "{}", out["objectName"]);
    assert!(!out["objectName"].ends_with('-'));
}

#[test]
fn identifiers_never_start_with_a_digit() {
    let out = config("0day", "1st", &[]).unwrap();
    assert!(
        out["database"].starts_with("db_0day_1st_"),
        "{}",
        out["database"]
    );
}

#[test]
fn a_requested_database_is_used_when_valid_and_refused_otherwise() {
    let out = config("shop", "web", &[("database", "orders")]).unwrap();
    assert_eq!(out["database"], "orders");
    assert_eq!(out["user"], "orders");
    for bad in ["Orders", "1x", "pg_catalog", "a;drop", &"a".repeat(64)] {
        let error = config("shop", "web", &[("database", bad)]).unwrap_err();
        assert!(
            matches!(&error, HookError::InvalidInput(m) if m.contains("data.database")),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_plug_side_gets_nothing() {
    let input = ConfigInput::new(
        Side::Plug,
        testing::plug("shop", "web", json!({})),
        testing::socket("databases", "postgres", json!({})),
    );
    assert!(Harness::new(Database).config(input).unwrap().is_empty());
}
