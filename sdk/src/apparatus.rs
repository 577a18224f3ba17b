//! The trait hook authors implement.

use crate::types::{ConfigInput, Coupling, HookResult, Values};

/// The hooks of a Plug's or a Socket's apparatus. Every hook has a default that does nothing
/// and succeeds, so implement only the ones you need.
///
/// Which side a call is for is in the input (`side`): one component may serve Plugs, Sockets
/// or both. Hooks must be idempotent: plugboard retries a hook that failed, and may call a hook
/// again after an operator restart.
///
/// Return [`HookError`](crate::HookError) for failures you expect; a panic ends the call as a
/// trap, which plugboard reports as a bug in the component.
pub trait Apparatus {
    /// Contributes to the calling side's config: the returned keys are merged over the side's
    /// other config sources, then the Socket's interface validates the result.
    ///
    /// The default returns no keys.
    fn config(&self, input: ConfigInput) -> HookResult<Values> {
        let _ = input;
        Ok(Values::new())
    }

    /// The Plug or Socket was first seen. Only the owner's object is set, and both configs
    /// are empty.
    fn created(&self, coupling: Coupling) -> HookResult {
        let _ = coupling;
        Ok(())
    }

    /// A Plug coupled to a Socket. Both objects and both validated configs are set.
    fn coupled(&self, coupling: Coupling) -> HookResult {
        let _ = coupling;
        Ok(())
    }

    /// The inputs of a coupling changed. Both objects and both validated configs are set.
    fn updated(&self, coupling: Coupling) -> HookResult {
        let _ = coupling;
        Ok(())
    }

    /// A Plug decoupled from a Socket. The Socket is missing when it no longer exists.
    fn decoupled(&self, coupling: Coupling) -> HookResult {
        let _ = coupling;
        Ok(())
    }

    /// The Plug or Socket is being deleted. Only the owner's object is set, and both configs
    /// are empty.
    fn deleted(&self, coupling: Coupling) -> HookResult {
        let _ = coupling;
        Ok(())
    }
}
