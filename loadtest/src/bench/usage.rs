//! CPU time and peak memory per process, from `/proc`: `utime + stime` of
//! `/proc/<pid>/stat` before and after the run, and `VmHWM` of
//! `/proc/<pid>/status` at the end. Postgres and NATS are found by name
//! (Postgres's backends apart from its background processes);
//! Postgres backends that start during the run count from zero, those that
//! end during it are missed (their time is small next to the run's).

use std::collections::BTreeMap;

/// One process of the run: what it is and its pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub label: String,
    pub pid: u32,
}

/// CPU ticks per process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    ticks: BTreeMap<u32, u64>,
}

/// One line of the usage table.
#[derive(Debug, Clone)]
pub struct Usage {
    pub label: String,
    pub processes: usize,
    pub cpu_secs: f64,
    /// Largest VmHWM among the label's processes, in kB.
    pub peak_rss_kb: u64,
}

/// Clock ticks a second (`getconf CLK_TCK`; 100 on Linux when it cannot be read).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The stack's processes plus this process (load generator and stand-in)
/// and every `postgres` and `nats-server` process on the machine.
pub fn tracked(stack: &[(&'static str, u32)]) -> Vec<Tracked> {
    let mut all: Vec<Tracked> = stack
        .iter()
        .map(|(name, pid)| Tracked {
            label: (*name).to_owned(),
            pid: *pid,
        })
        .collect();
    all.push(Tracked {
        label: "chat-memory-bench (load, stand-in)".to_owned(),
        pid: std::process::id(),
    });
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let label = match comm.trim() {
                "postgres" => postgres_label(
                    &std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default(),
                ),
                "nats-server" => "nats-server",
                _ => continue,
            };
            all.push(Tracked {
                label: label.to_owned(),
                pid,
            });
        }
    }
    all
}

/// Postgres sets each process's title: a backend's names its user and
/// database (`postgres: 15/main: postgres chat_memory 127.0.0.1(5432) idle`),
/// the others their role (`... walwriter`, `... checkpointer`,
/// `... autovacuum launcher`); the postmaster has none.
fn postgres_label(cmdline: &str) -> &'static str {
    const BACKGROUND: [&str; 9] = [
        "checkpointer",
        "background writer",
        "walwriter",
        "autovacuum",
        "stats collector",
        "logical replication",
        "archiver",
        "walsender",
        "startup",
    ];
    let title = cmdline.replace('\0', " ");
    if BACKGROUND.iter().any(|role| title.contains(role)) || !title.contains(": ") {
        "postgres (background: wal, checkpoints, vacuum, postmaster)"
    } else {
        "postgres (backends: statements)"
    }
}

/// utime + stime of `pid`, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime = fields.get(11)?.parse::<u64>().ok()?;
    let stime = fields.get(12)?.parse::<u64>().ok()?;
    Some(utime + stime)
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

pub fn sample(processes: &[Tracked]) -> Sample {
    Sample {
        ticks: processes
            .iter()
            .filter_map(|p| cpu_ticks(p.pid).map(|t| (p.pid, t)))
            .collect(),
    }
}

/// CPU between `before` and `after` and peak memory now, per label.
pub fn usage(processes: &[Tracked], before: &Sample, after: &Sample) -> Vec<Usage> {
    let per_second = ticks_per_second();
    let mut by_label: BTreeMap<&str, Usage> = BTreeMap::new();
    for p in processes {
        let Some(end) = after.ticks.get(&p.pid) else {
            continue;
        };
        let start = before.ticks.get(&p.pid).copied().unwrap_or(0);
        let line = by_label.entry(&p.label).or_insert_with(|| Usage {
            label: p.label.clone(),
            processes: 0,
            cpu_secs: 0.0,
            peak_rss_kb: 0,
        });
        line.processes += 1;
        line.cpu_secs += end.saturating_sub(start) as f64 / per_second;
        line.peak_rss_kb = line.peak_rss_kb.max(peak_rss_kb(p.pid).unwrap_or(0));
    }
    by_label.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_processes_are_told_apart_by_their_title() {
        let backend = "postgres: 15/main: postgres chat_memory 127.0.0.1(40312) idle";
        assert!(postgres_label(backend).contains("backends"));
        for background in [
            "postgres: 15/main: walwriter ",
            "postgres: 15/main: autovacuum worker chat_memory",
            "/usr/lib/postgresql/15/bin/postgres\0-D\0/var/lib/postgresql/15/main",
        ] {
            assert!(
                postgres_label(background).contains("background"),
                "{background}"
            );
        }
    }

    #[test]
    fn this_process_reports_cpu_time_and_peak_memory() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(peak_rss_kb(me).is_some_and(|kb| kb > 0));
    }
}
