//! Where host services go: the component's imports on `wasm32`, the in-memory fake of
//! [`testing`](crate::testing) everywhere else.

use crate::http::{Request, Response, SendError};
use crate::log::Level;

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str) {
    crate::__private::host_log(level, message);
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn send(request: Request) -> Result<Response, SendError> {
    crate::__private::host_send(request)
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: Level, message: &str) {
    crate::testing::fake_log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn send(request: Request) -> Result<Response, SendError> {
    crate::testing::fake_send(request)
}
