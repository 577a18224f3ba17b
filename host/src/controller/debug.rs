//! The local development loop (reference 9.3): with a debug endpoint set for a side, every
//! Plug's (or Socket's) hooks and `config` calls go to that one HTTP endpoint instead of the
//! apparatus its spec names — an external endpoint, an apparatus pod or a WebAssembly
//! component alike — so an author runs `plugboard-sdk`'s HTTP mode on a laptop against a real
//! cluster. Only sides whose spec has an apparatus are called. The endpoint is reached through
//! the HTTP apparatus client, under the operator's egress policy (a loopback endpoint needs
//! `--egress-allow 127.0.0.0/8`).
//!
//! It sends every coupling's configs, which may hold Secret values, to one place: the operator
//! warns loudly when it starts and every [`super::Options::debug_warning_every`] while it runs.

use super::Options;
use crate::apparatus::Side;
use crate::apparatus::http::redact;

/// The debug endpoint for `side`, when one is set.
pub(crate) fn endpoint(options: &Options, side: Side) -> Option<&str> {
    match side {
        Side::Plug => options.debug_plug_endpoint.as_deref(),
        Side::Socket => options.debug_socket_endpoint.as_deref(),
    }
    .map(str::trim)
    .filter(|e| !e.is_empty())
}

/// The warning to log while debug endpoints are set; `None` when none is.
pub(crate) fn warning(options: &Options) -> Option<String> {
    let sides: Vec<String> = [Side::Plug, Side::Socket]
        .into_iter()
        .filter_map(|side| {
            endpoint(options, side).map(|e| {
                let kind = match side {
                    Side::Plug => "Plug",
                    Side::Socket => "Socket",
                };
                format!("every {kind}'s hooks go to {}", redact(e))
            })
        })
        .collect();
    (!sides.is_empty()).then(|| {
        format!(
            "DEBUG ENDPOINT ON: {} instead of the apparatus in its spec, with its configs (which \
             may hold Secret values); for local development only, never in production",
            sides.join(" and ")
        )
    })
}

/// Logs [`warning`] now and then every `options.debug_warning_every`, until dropped.
pub(crate) fn warn_while_running(options: &Options) -> Option<Warner> {
    let message = warning(options)?;
    let every = options
        .debug_warning_every
        .max(std::time::Duration::from_secs(1));
    Some(Warner(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            tracing::warn!("{message}");
        }
    })))
}

/// The periodic warning's task, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Warner(tokio::task::JoinHandle<()>);

impl Drop for Warner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_apply_per_side_and_empty_means_off() {
        let mut options = Options::default();
        assert_eq!(warning(&options), None);
        options.debug_socket_endpoint = Some("  ".into());
        assert_eq!(endpoint(&options, Side::Socket), None);
        assert_eq!(warning(&options), None);
        options.debug_socket_endpoint = Some("http://127.0.0.1:9000/socket".into());
        assert_eq!(
            endpoint(&options, Side::Socket),
            Some("http://127.0.0.1:9000/socket")
        );
        assert_eq!(endpoint(&options, Side::Plug), None);
        let message = warning(&options).unwrap();
        assert!(message.starts_with("DEBUG ENDPOINT ON"), "{message}");
        assert!(message.contains("every Socket's hooks go to http://127.0.0.1:9000/socket"));
        assert!(!message.contains("Plug's"));
    }

    #[test]
    fn warnings_hide_credentials() {
        let options = Options {
            debug_plug_endpoint: Some("https://me:secret@laptop.example:8443/plug".into()),
            ..Options::default()
        };
        let message = warning(&options).unwrap();
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("https://laptop.example:8443/plug"));
    }
}
