//! `clients`: a Socket apparatus that keeps an HTTP API's client registry in step with the
//! Plugs coupled to the Socket — the way an identity service (Keycloak, say) gets one OAuth
//! client per application.
//!
//! The Socket's config names the API (`apiUrl`, and optionally `apiToken`, a bearer token that
//! is best given through the Socket's `configSecretName`); each Plug's config names its client
//! (`clientId`, and optionally `redirectUris`, comma-separated). On the Socket side:
//!
//! | hook | request | accepted answers |
//! | --- | --- | --- |
//! | `coupled` | `POST {apiUrl}/clients` with the client | 201; 409 when this Plug already registered it (hooks run at least once) |
//! | `updated` | `PUT {apiUrl}/clients/{clientId}` (404: registered again as in `coupled`), then the Plug's other clients removed | 200, 201, 204 |
//! | `decoupled` | `GET {apiUrl}/clients`, then `DELETE {apiUrl}/clients/{id}` for every client of the Plug | 200, 204, 404 (already gone) |
//!
//! Clients are matched to their Plug by `owner`, so a renamed `clientId` does not leave the old
//! client behind. The client's JSON body is `{"clientId", "redirectUris": [...], "owner": "<ns>/<plug>"}`. A
//! `clientId` registered by another Plug is refused as invalid input, a 5xx answer or an
//! unreachable API is retried later, and any other answer fails the hook with the API's
//! status. The API's host must be in the Socket's `spec.apparatus.wasm.allowedHosts`.

use plugboard_sdk::http::{self, Request, Response};
use plugboard_sdk::serde_json::{self, json};
use plugboard_sdk::{Apparatus, ConfigInput, Coupling, HookError, HookResult, Values, log};

/// The apparatus.
#[derive(Debug, Default)]
pub struct Clients;

/// What a coupling asks for, read from both sides' configs.
#[derive(Debug, PartialEq, Eq)]
struct Registration {
    api_url: String,
    api_token: Option<String>,
    client_id: String,
    redirect_uris: Vec<String>,
    owner: String,
}

impl Registration {
    fn from_coupling(c: &Coupling) -> HookResult<Self> {
        let api_url = c
            .socket_config
            .get("apiUrl")
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| HookError::invalid_input("the Socket's config has no apiUrl"))?;
        let client_id = c.plug_config.get("clientId").cloned().unwrap_or_default();
        validate_client_id(&client_id)?;
        let redirect_uris = c
            .plug_config
            .get("redirectUris")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let owner = c
            .plug
            .as_ref()
            .map(|p| p.key())
            .ok_or_else(|| HookError::invalid_input("the hook was called without its Plug"))?;
        Ok(Self {
            api_url,
            api_token: c
                .socket_config
                .get("apiToken")
                .filter(|t| !t.is_empty())
                .cloned(),
            client_id,
            redirect_uris,
            owner,
        })
    }

    fn body(&self) -> serde_json::Value {
        json!({
            "clientId": self.client_id,
            "redirectUris": self.redirect_uris,
            "owner": self.owner,
        })
    }

    fn request(&self, method: &str, path: &str) -> Request {
        let request = Request::new(method, format!("{}{path}", self.api_url));
        match &self.api_token {
            Some(token) => request.with_header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    fn client_path(&self) -> String {
        format!("/clients/{}", self.client_id)
    }
}

/// Client ids become URL path segments: letters, digits, `-`, `_` and `.`, 1 to 64 of them.
fn validate_client_id(id: &str) -> HookResult {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(HookError::invalid_input(format!(
            "clientId {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Maps an answer the hook does not accept to the error kind it deserves.
fn unexpected(action: &str, r: &Registration, response: &Response) -> HookError {
    let message = format!(
        "{action} client {} answered HTTP {}",
        r.client_id, response.status
    );
    if response.status >= 500 || response.status == 429 {
        HookError::retry_later(message)
    } else {
        HookError::failed(message)
    }
}

fn register(r: &Registration) -> HookResult {
    let response = http::send(r.request("POST", "/clients").with_json(&r.body()))?;
    match response.status {
        201 | 200 => {
            log::info(format_args!(
                "registered client {} for {}",
                r.client_id, r.owner
            ));
            Ok(())
        }
        // Already there: ours (a repeated hook) is brought up to date, another Plug's is refused.
        409 => {
            let existing = http::send(r.request("GET", &r.client_path()))?;
            let owner = existing
                .json()
                .ok()
                .and_then(|v| v.get("owner").and_then(|o| o.as_str()).map(str::to_owned));
            if owner.as_deref() == Some(r.owner.as_str()) {
                update(r)
            } else {
                Err(HookError::invalid_input(format!(
                    "clientId {} is already registered by {}; choose another clientId",
                    r.client_id,
                    owner.as_deref().unwrap_or("someone else")
                )))
            }
        }
        _ => Err(unexpected("registering", r, &response)),
    }
}

fn update(r: &Registration) -> HookResult {
    let response = http::send(r.request("PUT", &r.client_path()).with_json(&r.body()))?;
    match response.status {
        200 | 201 | 204 => {
            log::info(format_args!(
                "updated client {} for {}",
                r.client_id, r.owner
            ));
        }
        // Gone from the API (removed by hand, or the clientId changed): register it again.
        404 => register(r)?,
        _ => return Err(unexpected("updating", r, &response)),
    }
    // A renamed clientId leaves the old client behind: remove the Plug's other clients.
    remove_owned(r, Some(&r.client_id))
}

/// Removes every client registered for this Plug, except `keep`.
fn remove_owned(r: &Registration, keep: Option<&str>) -> HookResult {
    let response = http::send(r.request("GET", "/clients"))?;
    if !response.is_success() {
        return Err(unexpected("listing", r, &response));
    }
    let listed = response.json().map_err(|e| {
        HookError::failed(format!("listing clients gave an unreadable answer: {e}"))
    })?;
    let owned = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("owner").and_then(|o| o.as_str()) == Some(r.owner.as_str()))
        .filter_map(|c| c.get("clientId").and_then(|id| id.as_str()))
        .filter(|id| Some(*id) != keep && validate_client_id(id).is_ok());
    for id in owned {
        let response = http::send(r.request("DELETE", &format!("/clients/{id}")))?;
        match response.status {
            200 | 204 | 404 => log::info(format_args!("removed client {id} of {}", r.owner)),
            _ => return Err(unexpected("removing", r, &response)),
        }
    }
    Ok(())
}

impl Apparatus for Clients {
    /// Contributes nothing: the configs come from the specs.
    fn config(&self, _input: ConfigInput) -> HookResult<Values> {
        Ok(Values::new())
    }

    fn coupled(&self, c: Coupling) -> HookResult {
        register(&Registration::from_coupling(&c)?)
    }

    fn updated(&self, c: Coupling) -> HookResult {
        update(&Registration::from_coupling(&c)?)
    }

    fn decoupled(&self, c: Coupling) -> HookResult {
        remove_owned(&Registration::from_coupling(&c)?, None)
    }
}

plugboard_sdk::export!(Clients);

#[cfg(test)]
mod tests;
