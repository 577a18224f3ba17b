use super::*;
use plugboard_sdk::Side;
use plugboard_sdk::http::SendError;
use plugboard_sdk::serde_json::json;
use plugboard_sdk::testing::{self, Harness};

const API: &str = "http://clients.example:8080/api";

fn coupling(client_id: &str) -> Coupling {
    Coupling::new(Side::Socket)
        .with_plug(testing::plug(
            "shop",
            "web",
            json!({"socket": {"name": "sso"}}),
        ))
        .with_socket(testing::socket("auth", "sso", json!({})))
        .with_socket_config("apiUrl", format!("{API}/"))
        .with_socket_config("apiToken", "s3cret")
        .with_plug_config("clientId", client_id)
        .with_plug_config(
            "redirectUris",
            "https://web.example/cb, https://web.example/cb2",
        )
}

fn listing(clients: serde_json::Value) -> Response {
    Response::new(200).with_body(clients.to_string())
}

fn sent(h: &Harness<Clients>) -> Vec<(String, String)> {
    h.requests()
        .iter()
        .map(|r| (r.method.clone(), r.url.clone()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(m, u)| ((*m).to_owned(), format!("{API}{u}")))
        .collect()
}

#[test]
fn coupled_registers_the_client_with_its_owner_and_the_token() {
    let mut h = Harness::new(Clients);
    h.respond("POST", &format!("{API}/clients"), Response::new(201));

    h.coupled(coupling("web")).unwrap();

    let request = &h.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, format!("{API}/clients"));
    assert!(
        request
            .headers
            .contains(&("authorization".to_owned(), "Bearer s3cret".to_owned()))
    );
    let body: serde_json::Value =
        serde_json::from_slice(request.body.as_deref().unwrap_or_default()).unwrap();
    assert_eq!(
        body,
        json!({
            "clientId": "web",
            "redirectUris": ["https://web.example/cb", "https://web.example/cb2"],
            "owner": "shop/web",
        })
    );
}

#[test]
fn a_repeated_coupled_hook_updates_its_own_client() {
    let mut h = Harness::new(Clients);
    h.respond("POST", &format!("{API}/clients"), Response::new(409))
        .respond(
            "GET",
            &format!("{API}/clients/web"),
            listing(json!({"clientId": "web", "owner": "shop/web"})),
        )
        .respond("PUT", &format!("{API}/clients/web"), Response::new(200))
        .respond(
            "GET",
            &format!("{API}/clients"),
            listing(json!([{"clientId": "web", "owner": "shop/web"}])),
        );

    h.coupled(coupling("web")).unwrap();

    assert_eq!(
        sent(&h),
        pairs(&[
            ("POST", "/clients"),
            ("GET", "/clients/web"),
            ("PUT", "/clients/web"),
            ("GET", "/clients"),
        ])
    );
}

#[test]
fn a_client_id_taken_by_another_plug_is_invalid_input() {
    let mut h = Harness::new(Clients);
    h.respond("POST", &format!("{API}/clients"), Response::new(409))
        .respond(
            "GET",
            &format!("{API}/clients/web"),
            listing(json!({"clientId": "web", "owner": "other/app"})),
        );

    let error = h.coupled(coupling("web")).unwrap_err();

    assert!(
        matches!(&error, HookError::InvalidInput(m) if m.contains("already registered by other/app"))
    );
    assert!(!sent(&h).iter().any(|(m, _)| m == "PUT"));
}

#[test]
fn updated_renames_by_registering_the_new_id_and_removing_the_old_one() {
    let mut h = Harness::new(Clients);
    h.respond("PUT", &format!("{API}/clients/web2"), Response::new(404))
        .respond("POST", &format!("{API}/clients"), Response::new(201))
        .respond(
            "GET",
            &format!("{API}/clients"),
            listing(json!([
                {"clientId": "web", "owner": "shop/web"},
                {"clientId": "web2", "owner": "shop/web"},
                {"clientId": "other", "owner": "shop/other"},
            ])),
        )
        .respond("DELETE", &format!("{API}/clients/web"), Response::new(204));

    h.updated(coupling("web2")).unwrap();

    assert_eq!(
        sent(&h),
        pairs(&[
            ("PUT", "/clients/web2"),
            ("POST", "/clients"),
            ("GET", "/clients"),
            ("DELETE", "/clients/web"),
        ])
    );
}

#[test]
fn decoupled_removes_every_client_of_the_plug_and_tolerates_gone_ones() {
    let mut h = Harness::new(Clients);
    h.respond(
        "GET",
        &format!("{API}/clients"),
        listing(json!([
            {"clientId": "web", "owner": "shop/web"},
            {"clientId": "old", "owner": "shop/web"},
            {"clientId": "other", "owner": "shop/other"},
        ])),
    )
    .respond("DELETE", &format!("{API}/clients/web"), Response::new(204))
    .respond("DELETE", &format!("{API}/clients/old"), Response::new(404));

    h.decoupled(coupling("web")).unwrap();

    assert_eq!(
        sent(&h),
        pairs(&[
            ("GET", "/clients"),
            ("DELETE", "/clients/web"),
            ("DELETE", "/clients/old"),
        ])
    );
}

#[test]
fn bad_configs_are_invalid_input_naming_what_to_fix() {
    let h = Harness::new(Clients);
    for id in ["", "a/b", "../x", &"x".repeat(65)] {
        let error = h.coupled(coupling(id)).unwrap_err();
        assert!(
            matches!(&error, HookError::InvalidInput(m) if m.contains("clientId")),
            "{id}: {error}"
        );
    }
    let no_api = Coupling::new(Side::Socket)
        .with_plug(testing::plug("shop", "web", json!({})))
        .with_plug_config("clientId", "web");
    let error = h.coupled(no_api).unwrap_err();
    assert!(matches!(&error, HookError::InvalidInput(m) if m.contains("apiUrl")));
    assert!(h.requests().is_empty());
}

#[test]
fn server_errors_and_outages_are_retried_later_other_answers_fail() {
    let mut h = Harness::new(Clients);
    h.respond("POST", &format!("{API}/clients"), Response::new(503));
    assert!(matches!(
        h.coupled(coupling("web")),
        Err(HookError::RetryLater(_))
    ));

    h.respond("POST", &format!("{API}/clients"), Response::new(400));
    assert!(
        matches!(h.coupled(coupling("web")), Err(HookError::Failed(m)) if m.contains("HTTP 400"))
    );

    h.fail("POST", &format!("{API}/clients"), SendError::Timeout);
    assert!(matches!(
        h.coupled(coupling("web")),
        Err(HookError::RetryLater(_))
    ));
}
