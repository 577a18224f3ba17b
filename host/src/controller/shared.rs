//! The JSON form of each Socket version, shared by the Plug reconciles that need it at once.
//!
//! Every Plug reconcile hands its Socket to apparatuses and templates as JSON (without the
//! list of coupled Plugs, see [`super::plug::socket_json`]), and each of the Plug controller's
//! concurrent reconciles built its own copy. Reconciles of the same Socket version share one
//! copy, kept only while one of them still holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use super::Error;
use crate::crd::Socket;

/// Entries kept before the ones no reconcile holds any more are dropped.
const PRUNE_ABOVE: usize = 64;

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct SocketJson {
    /// By Socket UID: the resource version and its JSON while someone holds it.
    by_uid: Mutex<HashMap<String, (String, Weak<Value>)>>,
}

impl SocketJson {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Weak<Value>)>> {
        self.by_uid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `socket` as JSON, shared with every other holder of the same version. Only copies from
    /// the operator's watch are shared (a copy read from the API server carries the managed
    /// fields the watch drops, so it gets JSON of its own).
    pub(crate) fn get(&self, socket: &Socket) -> Result<Arc<Value>, Error> {
        let meta = &socket.metadata;
        let (Some(uid), Some(version), None) = (
            meta.uid.as_deref(),
            meta.resource_version.as_deref(),
            meta.managed_fields.as_ref(),
        ) else {
            return super::plug::socket_json(socket).map(Arc::new);
        };
        if let Some((v, json)) = self.lock().get(uid)
            && v == version
            && let Some(json) = json.upgrade()
        {
            return Ok(json);
        }
        let json = Arc::new(super::plug::socket_json(socket)?);
        let mut by_uid = self.lock();
        if by_uid.len() >= PRUNE_ABOVE {
            by_uid.retain(|_, (_, json)| json.strong_count() > 0);
            if by_uid.len() * 4 < by_uid.capacity() {
                by_uid.shrink_to_fit();
            }
        }
        by_uid.insert(uid.to_owned(), (version.to_owned(), Arc::downgrade(&json)));
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(uid: &str, version: &str) -> Socket {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "plugboard.dev/v1alpha1", "kind": "Socket",
            "metadata": {"name": "db", "namespace": "team", "uid": uid,
                         "resourceVersion": version},
            "spec": {},
        }))
        .unwrap()
    }

    #[test]
    fn holders_of_one_version_share_its_json() {
        let shared = SocketJson::default();
        let a = shared.get(&socket("s", "1")).unwrap();
        let b = shared.get(&socket("s", "1")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        let newer = shared.get(&socket("s", "2")).unwrap();
        assert_eq!(newer["metadata"]["resourceVersion"], "2");
        drop((a, b, newer));
        // Nobody holds it: built again.
        let again = shared.get(&socket("s", "2")).unwrap();
        assert_eq!(again["metadata"]["resourceVersion"], "2");
        // A copy with managed fields (read from the API server) is not shared.
        let mut fresh = socket("s", "2");
        fresh.metadata.managed_fields = Some(Vec::new());
        assert!(!Arc::ptr_eq(&again, &shared.get(&fresh).unwrap()));
        for i in 0..200 {
            let _ = shared.get(&socket(&format!("u{i}"), "1")).unwrap();
        }
        assert!(shared.lock().len() <= PRUNE_ABOVE + 1);
    }
}
