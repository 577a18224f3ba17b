//! CPU time of processes from `/proc`: the operator's, the benchmark's own, and that of the
//! control plane this benchmark started (its API server and etcd, found among its descendants),
//! so a table shows which of them a scenario kept busy.

use std::collections::HashMap;

/// User + system CPU seconds of process `pid` so far (`NaN` when it cannot be read).
/// `/proc/<pid>/stat` counts in clock ticks of `USER_HZ`, which is 100 on Linux.
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map_or(f64::NAN, |s| s.cpu_seconds)
}

struct Stat {
    comm: String,
    ppid: u32,
    cpu_seconds: f64,
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name is in parentheses and may hold spaces; the fields after it start at
    // field 3 (`state`).
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some(Stat {
        comm,
        ppid,
        cpu_seconds: (ticks(11)? + ticks(12)?) / 100.0,
    })
}

/// Descendants of `root` by command name (`kube-apiserver`, `etcd`, …).
fn descendants(root: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut stats = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            stats.insert(pid, stat);
        }
    }
    let is_descendant = |mut pid: u32| {
        for _ in 0..64 {
            match stats.get(&pid) {
                Some(stat) if stat.ppid == root => return true,
                Some(stat) if stat.ppid > 1 => pid = stat.ppid,
                _ => return false,
            }
        }
        false
    };
    stats
        .iter()
        .filter(|(pid, _)| is_descendant(**pid))
        .map(|(pid, stat)| (*pid, stat.comm.clone()))
        .collect()
}

/// The control plane's processes that this benchmark started.
pub struct ControlPlane {
    api_server: Vec<u32>,
    etcd: Vec<u32>,
}

/// CPU seconds so far of the benchmark itself, the API server and etcd.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub bench: f64,
    pub api_server: f64,
    pub etcd: f64,
}

impl std::ops::Sub for CpuSample {
    type Output = CpuSample;

    fn sub(self, before: CpuSample) -> CpuSample {
        CpuSample {
            bench: self.bench - before.bench,
            api_server: self.api_server - before.api_server,
            etcd: self.etcd - before.etcd,
        }
    }
}

impl ControlPlane {
    /// Looks for them now (the API server restarts only in tests that ask for it).
    pub fn find() -> Self {
        let all = descendants(std::process::id());
        let named = |name: &str| {
            all.iter()
                .filter(|(_, comm)| comm == name)
                .map(|(pid, _)| *pid)
                .collect::<Vec<_>>()
        };
        Self {
            api_server: named("kube-apiserver"),
            etcd: named("etcd"),
        }
    }

    /// Whether both were found (they are not with an external cluster).
    pub fn found(&self) -> bool {
        !self.api_server.is_empty() && !self.etcd.is_empty()
    }

    /// CPU seconds so far.
    pub fn sample(&self) -> CpuSample {
        let sum = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum();
        CpuSample {
            bench: cpu_seconds(std::process::id()),
            api_server: sum(&self.api_server),
            etcd: sum(&self.etcd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_with_spaces_in_the_name() {
        let line =
            "4242 (kube apiserver) S 17 4242 17 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 9 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "kube apiserver");
        assert_eq!(stat.ppid, 17);
        assert!((stat.cpu_seconds - 3.0).abs() < 1e-9);
    }

    #[test]
    fn this_process_is_readable() {
        assert!(cpu_seconds(std::process::id()) >= 0.0);
    }
}
