//! `greeter`: the example of one apparatus deployed two ways. The same [`Greeter`] builds into
//! a WebAssembly component (`export!` below) and runs as an HTTP apparatus (`src/main.rs`,
//! feature `http`), with the same results either way.
//!
//! As a Socket's apparatus, `config` greets the coupling Plug in the language the Socket's
//! data asks for; as a Plug's, it names the Socket that greets it. Lifecycle hooks log one line
//! each. An unknown language is invalid input: the Socket's data has to change.

use plugboard_sdk::{Apparatus, ConfigInput, Coupling, HookError, HookResult, Side, Values, log};

/// The greeter apparatus.
#[derive(Debug, Default)]
pub struct Greeter;

/// The languages the greeter speaks, with their salutation.
pub const LANGUAGES: [(&str, &str); 3] = [("en", "Hello"), ("fr", "Bonjour"), ("de", "Hallo")];

/// The salutation for `language`.
fn salutation(language: &str) -> HookResult<&'static str> {
    LANGUAGES
        .iter()
        .find(|(code, _)| *code == language)
        .map(|(_, word)| *word)
        .ok_or_else(|| {
            let codes: Vec<&str> = LANGUAGES.iter().map(|(code, _)| *code).collect();
            HookError::invalid_input(format!(
                "language `{language}` in the Socket's data is not one of {}",
                codes.join(", ")
            ))
        })
}

impl Apparatus for Greeter {
    /// Socket side: `greeting` (`<salutation>, <plug name>!`, in the Socket's data `language`,
    /// default `en`) and `audience` (the Plug as `namespace/name`). Plug side: `greeted-by`
    /// (the Socket as `namespace/name`). Deterministic: the same inputs give the same keys.
    fn config(&self, input: ConfigInput) -> HookResult<Values> {
        match input.side {
            Side::Socket => {
                let language = input
                    .socket_data
                    .get("language")
                    .map_or("en", String::as_str);
                let greeting = format!("{}, {}!", salutation(language)?, input.plug.name());
                Ok(Values::from([
                    ("greeting".to_owned(), greeting),
                    ("audience".to_owned(), input.plug.key()),
                ]))
            }
            Side::Plug => Ok(Values::from([(
                "greeted-by".to_owned(),
                input.socket.key(),
            )])),
        }
    }

    fn coupled(&self, coupling: Coupling) -> HookResult {
        say("coupled", &coupling);
        Ok(())
    }

    fn updated(&self, coupling: Coupling) -> HookResult {
        say("updated", &coupling);
        Ok(())
    }

    fn decoupled(&self, coupling: Coupling) -> HookResult {
        say("decoupled", &coupling);
        Ok(())
    }
}

fn say(hook: &str, coupling: &Coupling) {
    let peer = coupling.peer().map(|p| p.key()).unwrap_or_default();
    let greeting = coupling
        .socket_config
        .get("greeting")
        .map_or("", String::as_str);
    log::info(format_args!(
        "greeter {hook} on the {} side with {peer}: {greeting}",
        coupling.side
    ));
}

plugboard_sdk::export!(Greeter);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::serde_json::json;
    use plugboard_sdk::testing::{self, Harness};

    fn input(side: Side, language: Option<&str>) -> ConfigInput {
        let input = ConfigInput::new(
            side,
            testing::plug("shop", "web", json!({})),
            testing::socket("infra", "greetings", json!({})),
        );
        match language {
            Some(l) => input.with_socket_data("language", l),
            None => input,
        }
    }

    #[test]
    fn sockets_greet_plugs_in_their_language() {
        let h = Harness::new(Greeter);
        let en = h.config(input(Side::Socket, None)).unwrap();
        assert_eq!(en["greeting"], "Hello, web!");
        assert_eq!(en["audience"], "shop/web");
        let fr = h.config(input(Side::Socket, Some("fr"))).unwrap();
        assert_eq!(fr["greeting"], "Bonjour, web!");
        assert_eq!(
            h.config(input(Side::Plug, None)).unwrap()["greeted-by"],
            "infra/greetings"
        );
    }

    #[test]
    fn unknown_languages_are_invalid_input() {
        let h = Harness::new(Greeter);
        let err = h.config(input(Side::Socket, Some("xx"))).unwrap_err();
        assert!(
            matches!(&err, HookError::InvalidInput(m) if m.contains("`xx`") && m.contains("en, fr, de")),
            "{err:?}"
        );
    }

    #[test]
    fn lifecycle_hooks_log_the_greeting() {
        let h = Harness::new(Greeter);
        let coupling = Coupling::new(Side::Socket)
            .with_plug(testing::plug("shop", "web", json!({})))
            .with_socket(testing::socket("infra", "greetings", json!({})))
            .with_socket_config("greeting", "Hello, web!");
        h.coupled(coupling).unwrap();
        assert_eq!(
            h.log_messages(),
            ["greeter coupled on the socket side with shop/web: Hello, web!"]
        );
    }
}
