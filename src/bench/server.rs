//! The fulfilld under test: a process of its own (this very binary, `serve`), so its CPU,
//! memory and system calls are measured alone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long the server may take to start or to drain on SIGTERM.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running fulfilld; killed if dropped before [`Server::stop`].
pub struct Server {
    pub address: String,
    /// The process's id: fulfilld's own, not strace's.
    pid: u32,
    child: Child,
    /// Where strace writes its count of `fsync`s when it watches the server.
    strace_summary: Option<PathBuf>,
}

/// The process's resource use at a moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system CPU time of every thread.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

impl Server {
    /// Starts `fulfilld serve` with `env`, under strace when `count_fsyncs`, and waits until
    /// it is ready.
    pub async fn start(
        env: &[(&str, String)],
        log: &Path,
        count_fsyncs: bool,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let exe = std::env::current_exe().context("cannot find the fulfilld binary")?;
        let strace_summary = count_fsyncs.then(|| log.with_extension("strace"));
        let mut command = match &strace_summary {
            // Only the counted calls stop the process (seccomp), so strace costs little.
            Some(summary) => {
                let mut command = Command::new("strace");
                command
                    .args(["-f", "-c", "-q", "--seccomp-bpf"])
                    .args(["-e", "trace=fsync,fdatasync,sync_file_range"])
                    .arg("-o")
                    .arg(summary)
                    .arg("--")
                    .arg(&exe);
                command
            }
            None => Command::new(&exe),
        };
        let log = std::fs::File::create(log).context("cannot create the server's log")?;
        let child = command
            .arg("serve")
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start fulfilld (or strace)")?;
        let mut server = Self {
            address: format!("http://127.0.0.1:{port}"),
            pid: child.id().context("fulfilld exited at once")?,
            child,
            strace_summary,
        };
        server.wait_ready().await?;
        if server.strace_summary.is_some() {
            server.pid = traced_child(server.pid)?;
        }
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{}/readyz", self.address)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("fulfilld did not become ready at {}", self.address)
    }

    /// CPU time and resident memory so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .context("cannot read the server's /proc/PID/stat")?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> u64 {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
        let cpu_ticks = ticks(11) + ticks(12);
        // SAFETY: sysconf has no preconditions.
        let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .unwrap_or(100)
            .max(1);
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("cannot read the server's /proc/PID/status")?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        Ok(Usage {
            cpu: Duration::from_micros(cpu_ticks * 1_000_000 / per_second),
            rss_bytes: rss_kib * 1024,
        })
    }

    /// SIGTERM, as a deploy sends it; waits for the drain and returns the number of
    /// `fsync`-like calls strace counted, if it watched.
    pub async fn stop(&mut self) -> anyhow::Result<Option<u64>> {
        signal(self.pid, libc::SIGTERM);
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .context("fulfilld did not stop within a minute of SIGTERM")??;
        match self.strace_summary.take() {
            Some(summary) => Ok(Some(syncs_counted(&summary)?)),
            None => Ok(None),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Under strace, killing strace would leave fulfilld running: kill fulfilld itself.
        if self.strace_summary.is_some() && matches!(self.child.try_wait(), Ok(None)) {
            // Before it was found (a start that failed), `pid` is strace's.
            if let Ok(traced) = traced_child(self.pid) {
                signal(traced, libc::SIGKILL);
            }
            signal(self.pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, signal) };
    }
}

/// The fulfilld strace started (strace also forks short-lived children of its own).
fn traced_child(strace: u32) -> anyhow::Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children"))
        .context("cannot list strace's children")?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "fulfilld")
        })
        .context("strace did not start fulfilld")
}

/// The `calls` column of strace's summary, summed over the syncing calls.
fn syncs_counted(summary: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(summary).context("cannot read strace's summary")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let name = columns.last()?;
            let syncing = ["fsync", "fdatasync", "sync_file_range"].contains(name);
            // Rows with no errors have five columns, with errors six.
            syncing.then(|| columns.get(3)?.parse::<u64>().ok())?
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summaries_are_read_for_their_syncing_calls_only() {
        let dir = std::env::temp_dir().join(format!("fulfilld-strace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let summary = dir.join("summary");
        std::fs::write(
            &summary,
            "% time     seconds  usecs/call     calls    errors syscall\n\
             ------ ----------- ----------- --------- --------- ----------------\n \
             90.00    0.010000         100       100           fdatasync\n \
             10.00    0.001000          50        20         1 fsync\n\
             ------ ----------- ----------- --------- --------- ----------------\n\
             100.00    0.011000          91       120         1 total\n",
        )
        .unwrap();
        assert_eq!(syncs_counted(&summary).unwrap(), 120);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
