//! The greeter as an HTTP apparatus: the same `Greeter` the WebAssembly component exports,
//! served with `plugboard_sdk::server`. Listens on `GREETER_ADDR` (default `0.0.0.0:8080`).

use plugboard_plugin_greeter::Greeter;
use plugboard_sdk::server::Server;

fn main() -> std::io::Result<()> {
    let addr = std::env::var("GREETER_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".to_owned());
    Server::new().run::<Greeter>(&addr)
}
