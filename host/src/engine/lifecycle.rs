//! The coupling lifecycle as pure decisions: from what a reconcile observed (the Plug's status,
//! the state of the Socket it names, admission, the checksum of the coupling's inputs), which
//! steps run, in which order, and which hooks each step calls. The controller loads the
//! observations, asks these functions, and acts; it decides nothing itself.
//!
//! Guarantees kept here:
//! - `created` runs once per object (recorded in status before anything else happens);
//! - a Plug coupled to a Socket it should no longer be coupled to (other Socket named, Socket
//!   gone or re-created, no longer admitted) decouples **before** anything else;
//! - `coupled` runs the first time, `updated` only when the inputs' checksum changed, nothing
//!   otherwise (an operator restart observes the same checksum and fires nothing);
//! - hooks run Plug side first, then Socket side (reference 4.8); results are computed after.

use crate::apparatus::Side;
use crate::crd::LifecyclePoint;

use super::admission::Admission;

/// The state of the Socket a Plug names, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketState {
    /// No such Socket.
    Missing,
    /// Being deleted.
    Deleting,
    /// Exists but its `created` hooks have not run (yet).
    NotCreated {
        /// Why, when the Socket reports a failure (its `Ready` reason and message).
        fault: Option<(String, String)>,
    },
    /// Ran its created hooks but reports a failure of its own: Plugs wait, and Plugs already
    /// coupled to it stay coupled (a fault is not a reason to decouple).
    Faulty {
        /// Its UID.
        uid: String,
        /// Its `Ready` reason and message.
        fault: (String, String),
    },
    /// Ready for Plugs.
    Ready {
        /// Its UID.
        uid: String,
        /// Whether it admits this Plug.
        admission: Admission,
    },
}

/// How long a new Plug lets the Socket it names appear in the operator's cache before it runs
/// its own `created` hooks and says it waits.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a new Plug lets a Socket that is there but has not recorded its `created` hooks
/// yet (and reports no failure) finish them: a busy operator may take seconds to get to it.
pub const SETTLE_SETUP: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a new Plug with no status may hold back for a Socket in `socket`'s state (see
/// [`Before::settle`]): zero unless the Socket is missing or being set up.
pub fn settle_window(socket: &SocketState) -> std::time::Duration {
    match socket {
        SocketState::Missing => SETTLE,
        SocketState::NotCreated { fault: None } => SETTLE_SETUP,
        _ => std::time::Duration::ZERO,
    }
}

/// What a Plug reconcile observed, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The Plug's `created` hooks have run.
    pub created: bool,
    /// UID of the Socket the Plug's status says it is coupled to.
    pub coupled_to: Option<String>,
    /// The Socket the Plug names.
    pub socket: SocketState,
    /// The Plug has no status yet and is younger than the [`settle_window`] of `socket`.
    pub fresh: bool,
}

/// Why a Plug waits instead of coupling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The Socket does not exist or is being deleted; a watch wakes the Plug.
    SocketMissing {
        /// Being deleted rather than absent.
        deleting: bool,
    },
    /// The Socket has not run its created hooks; with the Socket's own failure when it has one.
    SocketNotReady {
        /// The Socket's `Ready` reason and message.
        fault: Option<(String, String)>,
    },
    /// The Socket does not admit the Plug; the message names the rule.
    Refused(String),
}

/// The steps of one Plug reconcile before configs are computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Before {
    /// Run the Plug's `created` hooks first.
    pub run_created: bool,
    /// Decouple from the Socket in status first.
    pub decouple: bool,
    /// Wait (after the steps above) instead of coupling.
    pub wait: Option<Wait>,
    /// Do nothing yet, not even the steps above: a fresh Plug whose Socket is being set up
    /// (not seen yet, or running its `created` hooks without a failure) lets it finish, then
    /// runs its `created` and `coupled` hooks in one pass with one status write, instead of
    /// writing a waiting status first. The wait ends when the Socket changes or after its
    /// [`settle_window`], whichever comes first.
    pub settle: bool,
}

/// Decides the steps that come before configs.
pub fn before_configs(observed: &Observed) -> Before {
    let (still_coupled, wait) = match &observed.socket {
        SocketState::Missing => (false, Some(Wait::SocketMissing { deleting: false })),
        SocketState::Deleting => (false, Some(Wait::SocketMissing { deleting: true })),
        SocketState::NotCreated { fault } => (
            false,
            Some(Wait::SocketNotReady {
                fault: fault.clone(),
            }),
        ),
        SocketState::Faulty { uid, fault } => (
            observed.coupled_to.as_deref() == Some(uid.as_str()),
            Some(Wait::SocketNotReady {
                fault: Some(fault.clone()),
            }),
        ),
        SocketState::Ready { uid, admission } => {
            let same = observed.coupled_to.as_deref() == Some(uid.as_str());
            match admission {
                Admission::Admitted => (same, None),
                Admission::Refused(message) => (false, Some(Wait::Refused(message.clone()))),
            }
        }
    };
    let settle = observed.fresh
        && !observed.created
        && observed.coupled_to.is_none()
        && !settle_window(&observed.socket).is_zero();
    Before {
        run_created: !observed.created && !settle,
        decouple: observed.coupled_to.is_some() && !still_coupled,
        wait,
        settle,
    }
}

/// The coupling hook to run once configs are known: `coupled` the first time, `updated` when
/// the inputs changed since the hooks last ran, none otherwise.
pub fn coupling_hook(
    coupled: bool,
    last_checksum: Option<&str>,
    checksum: &str,
) -> Option<LifecyclePoint> {
    if !coupled {
        Some(LifecyclePoint::Coupled)
    } else if last_checksum != Some(checksum) {
        Some(LifecyclePoint::Updated)
    } else {
        None
    }
}

/// The sides whose hooks run at `point`, in order. A Plug's own `created` and `deleted` are
/// the Plug's only (the Socket's run in the Socket's reconcile).
pub fn hook_sides(point: LifecyclePoint) -> &'static [Side] {
    match point {
        LifecyclePoint::Created | LifecyclePoint::Deleted => &[Side::Plug],
        LifecyclePoint::Coupled | LifecyclePoint::Updated | LifecyclePoint::Decoupled => {
            &[Side::Plug, Side::Socket]
        }
    }
}

/// The sides whose `resultResources` are applied after results are computed, in order
/// (reference 4.2.R: the Socket's first, then the Plug's).
pub const RESULT_RESOURCE_SIDES: [Side; 2] = [Side::Socket, Side::Plug];

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(uid: &str) -> SocketState {
        SocketState::Ready {
            uid: uid.into(),
            admission: Admission::Admitted,
        }
    }

    fn faulty(uid: &str) -> SocketState {
        SocketState::Faulty {
            uid: uid.into(),
            fault: ("ConfigInvalid".into(), "socket config is missing x".into()),
        }
    }

    fn refused() -> SocketState {
        SocketState::Ready {
            uid: "s1".into(),
            admission: Admission::Refused("namespace x is not admitted".into()),
        }
    }

    #[test]
    fn before_configs_table() {
        let not_created = SocketState::NotCreated { fault: None };
        // (created, coupled_to, socket) → (run_created, decouple, waits)
        type Case = (bool, Option<&'static str>, SocketState, bool, bool, bool);
        let cases: Vec<Case> = vec![
            // A new Plug runs created, then waits for or couples to its Socket.
            (false, None, SocketState::Missing, true, false, true),
            (false, None, ready("s1"), true, false, false),
            // Created, not coupled.
            (true, None, SocketState::Missing, false, false, true),
            (true, None, SocketState::Deleting, false, false, true),
            (true, None, not_created.clone(), false, false, true),
            (true, None, ready("s1"), false, false, false),
            (true, None, refused(), false, false, true),
            // Coupled to the Socket it names: nothing before configs.
            (true, Some("s1"), ready("s1"), false, false, false),
            // Coupled, but the Socket went away, is going, was re-created, or refuses now.
            (true, Some("s1"), SocketState::Missing, false, true, true),
            (true, Some("s1"), SocketState::Deleting, false, true, true),
            (true, Some("s1"), not_created, false, true, true),
            (true, Some("s1"), ready("s2"), false, true, false),
            (true, Some("s1"), refused(), false, true, true),
            // A Socket reporting a fault of its own: wait, but stay coupled to it.
            (true, Some("s1"), faulty("s1"), false, false, true),
            (true, Some("s1"), faulty("s2"), false, true, true),
            (true, None, faulty("s1"), false, false, true),
        ];
        for (created, coupled_to, socket, run_created, decouple, waits) in cases {
            let observed = Observed {
                created,
                coupled_to: coupled_to.map(str::to_owned),
                socket: socket.clone(),
                fresh: false,
            };
            let before = before_configs(&observed);
            assert_eq!(
                (before.run_created, before.decouple, before.wait.is_some()),
                (run_created, decouple, waits),
                "{observed:?}"
            );
            assert!(!before.settle, "{observed:?}");
        }
    }

    #[test]
    fn a_plug_waits_longer_for_a_socket_being_set_up_than_for_a_missing_one() {
        assert_eq!(settle_window(&SocketState::Missing), SETTLE);
        assert_eq!(
            settle_window(&SocketState::NotCreated { fault: None }),
            SETTLE_SETUP
        );
        assert!(SETTLE_SETUP > SETTLE);
        let fault = Some(("HookFailed".to_owned(), "created failed".to_owned()));
        for socket in [
            SocketState::NotCreated { fault },
            SocketState::Deleting,
            faulty("s1"),
            ready("s1"),
            refused(),
        ] {
            assert!(settle_window(&socket).is_zero(), "{socket:?}");
        }
    }

    #[test]
    fn a_fresh_plug_lets_its_socket_be_set_up_first() {
        let fault = Some(("HookFailed".to_owned(), "created failed".to_owned()));
        // (socket, settles)
        let cases = [
            (SocketState::Missing, true),
            (SocketState::NotCreated { fault: None }, true),
            // A Socket that says why it is not ready, or is going: no reason to hold back.
            (SocketState::NotCreated { fault }, false),
            (SocketState::Deleting, false),
            (faulty("s1"), false),
            (ready("s1"), false),
            (refused(), false),
        ];
        for (socket, settles) in cases {
            let observed = Observed {
                created: false,
                coupled_to: None,
                socket,
                fresh: true,
            };
            let before = before_configs(&observed);
            assert_eq!(before.settle, settles, "{observed:?}");
            // Nothing runs while it settles; otherwise `created` runs first as always.
            assert_eq!(before.run_created, !settles, "{observed:?}");
            assert!(!before.decouple, "{observed:?}");
        }
        // Only a Plug that has done nothing yet holds back.
        for (created, coupled_to) in [(true, None), (true, Some("s0".to_owned()))] {
            let observed = Observed {
                created,
                coupled_to,
                socket: SocketState::Missing,
                fresh: true,
            };
            assert!(!before_configs(&observed).settle, "{observed:?}");
        }
    }

    #[test]
    fn waits_say_why() {
        let fault = Some((
            "ConfigInvalid".to_owned(),
            "socket config is missing x".to_owned(),
        ));
        let observed = Observed {
            created: true,
            coupled_to: None,
            socket: SocketState::NotCreated {
                fault: fault.clone(),
            },
            fresh: false,
        };
        assert_eq!(
            before_configs(&observed).wait,
            Some(Wait::SocketNotReady { fault })
        );
        let observed = Observed {
            created: true,
            coupled_to: None,
            socket: refused(),
            fresh: false,
        };
        assert_eq!(
            before_configs(&observed).wait,
            Some(Wait::Refused("namespace x is not admitted".into()))
        );
    }

    #[test]
    fn coupled_first_updated_on_change_nothing_otherwise() {
        assert_eq!(
            coupling_hook(false, None, "a"),
            Some(LifecyclePoint::Coupled)
        );
        // Coupled hooks that ran but were not recorded (crash): run again (at-least-once).
        assert_eq!(
            coupling_hook(false, Some("a"), "a"),
            Some(LifecyclePoint::Coupled)
        );
        assert_eq!(
            coupling_hook(true, Some("a"), "b"),
            Some(LifecyclePoint::Updated)
        );
        assert_eq!(
            coupling_hook(true, None, "b"),
            Some(LifecyclePoint::Updated)
        );
        // A restart observes the same inputs: nothing fires.
        assert_eq!(coupling_hook(true, Some("a"), "a"), None);
    }

    #[test]
    fn hook_order_is_plug_then_socket_and_results_socket_then_plug() {
        for point in LifecyclePoint::ALL {
            let sides = hook_sides(point);
            assert_eq!(sides[0], Side::Plug, "{point:?}");
            match point {
                LifecyclePoint::Created | LifecyclePoint::Deleted => assert_eq!(sides.len(), 1),
                _ => assert_eq!(sides, [Side::Plug, Side::Socket]),
            }
        }
        assert_eq!(RESULT_RESOURCE_SIDES, [Side::Socket, Side::Plug]);
    }
}
