//! What the benchmarks share: their flags, generated content, and the CPU time of the local
//! AWS server (how much of a run the test bed itself cost).

use crate::Error;

/// A benchmark's settings as (flag, value) pairs: each flag of `flags` from the environment
/// as `BENCH_<FLAG>` (upper case, `-` as `_`), then from the arguments (`--flag value` or
/// `--flag=value`, later ones winning); `--help` prints `usage` and exits. `cargo bench`'s own
/// `--bench` argument is skipped.
pub fn bench_flags(flags: &[&str], usage: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for flag in flags {
        let var = format!("BENCH_{}", flag.to_uppercase().replace('-', "_"));
        if let Ok(value) = std::env::var(&var) {
            pairs.push(((*flag).to_owned(), value));
        }
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // cargo bench passes `--bench` to every harness = false target.
        if arg == "--bench" {
            continue;
        }
        if arg == "--help" || arg == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg}\n{usage}").into());
        };
        let (flag, value) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), v.to_owned()),
            None => (
                flag.to_owned(),
                args.next()
                    .ok_or_else(|| format!("--{flag} needs a value"))?,
            ),
        };
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// Deterministic, incompressible-looking bytes (splitmix64), fast enough that generating
/// half a gigabyte takes well under a second.
pub fn generate_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// CPU seconds (user + system) a process used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file: 11 and 12 after the state (field 3).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The local AWS server's pid: `LOCAL_AWS_PID`, else the pid file `infra/local-aws/start`
/// writes for the endpoint's port.
pub fn server_pid(endpoint: &str) -> Option<String> {
    if let Ok(pid) = std::env::var("LOCAL_AWS_PID") {
        return Some(pid);
    }
    let port = endpoint.rsplit(':').next()?.trim_end_matches('/');
    let file = format!(
        "{}/../infra/local-aws/.run/local-aws-{port}.pid",
        env!("CARGO_MANIFEST_DIR")
    );
    let pid = std::fs::read_to_string(file).ok()?.trim().to_owned();
    cpu_seconds(&pid).map(|_| pid)
}
