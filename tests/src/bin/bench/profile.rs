//! A CPU profile of the API server, taken through its `/debug/pprof/profile` endpoint while a
//! scaling scenario runs, so what a coupling costs the API server can be read by function
//! (`go tool pprof -top FILE`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A profile being taken.
pub struct Profile {
    task: JoinHandle<Result<Vec<u8>, String>>,
    path: PathBuf,
}

impl Profile {
    /// Starts a CPU profile of `seconds` seconds, to be saved at `path`.
    pub fn start(client: kube::Client, seconds: u64, path: PathBuf) -> Self {
        let task = tokio::spawn(async move {
            let request = hyper::Request::get(format!("/debug/pprof/profile?seconds={seconds}"))
                .body(kube::client::Body::from(Vec::new()))
                .map_err(|e| e.to_string())?;
            let response =
                tokio::time::timeout(Duration::from_secs(seconds + 60), client.send(request))
                    .await
                    .map_err(|_| "the API server did not answer the profile request".to_owned())?
                    .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect_bytes()
                .await
                .map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ));
            }
            Ok(body.to_vec())
        });
        Profile { task, path }
    }

    /// Waits for the profile and writes it; says where, or why there is none.
    pub async fn save(self) {
        let outcome = match self.task.await {
            Ok(Ok(bytes)) => std::fs::write(&self.path, bytes).map_err(|e| e.to_string()),
            Ok(Err(error)) => Err(error),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => eprintln!(
                "bench: API server CPU profile in {} (go tool pprof -top {0})",
                self.path.display()
            ),
            Err(error) => eprintln!("bench: no API server CPU profile: {error}"),
        }
    }
}
