//! `hsmkms-load wrk-script`: sets up a run as `hsmkms-load bench` does (the key, the store, the
//! body every request sends) and writes a Lua script for `wrk`, the light external load
//! generator the comparison runs beside its own tool. The script sends that one signed request
//! over and over and, when wrk ends, prints one JSON line in the shape of
//! [`RunResult`](crate::bench::RunResult) (`loader: "wrk"`), with p50/p90/p99/p99.9 in
//! milliseconds (wrk measures microseconds) and the answers that were not 2xx counted as errors.
//! wrk does not read the answers' bodies: the checked figures are `hsmkms-load bench`'s. Run it
//! with `wrk -c` equal to the script's `--connections` (or set `WRK_CONNECTIONS`), so the line
//! names the connections the run had.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::bench::{self, BenchArgs};

/// Options of `hsmkms-load wrk-script`.
#[derive(Debug, clap::Args)]
pub struct WrkArgs {
    #[command(flatten)]
    pub bench: BenchArgs,
    /// Where to write the script.
    #[arg(long)]
    pub out: PathBuf,
}

/// A Lua string literal (long bracket form, with a level no body contains).
fn lua_string(text: &str) -> String {
    let mut level = 0;
    while text.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    format!("[{eq}[{text}]{eq}]")
}

/// Runs `hsmkms-load wrk-script` on a runtime of its own.
pub fn main(args: WrkArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let script = runtime.block_on(script(&args.bench))?;
    std::fs::write(&args.out, script).with_context(|| format!("writing {}", args.out.display()))
}

/// The script for one run.
pub async fn script(args: &BenchArgs) -> Result<String> {
    let (endpoint, plan) = bench::prepare(args).await?;
    let body = String::from_utf8(plan.body.clone()).context("the request body is not UTF-8")?;
    let headers = endpoint.signed_headers("kms", plan.target, &plan.body)?;
    let mut lua = String::new();
    writeln!(
        lua,
        "-- written by hsmkms-load wrk-script: {} {}",
        args.label,
        args.op.name()
    )?;
    writeln!(lua, "wrk.method = \"POST\"")?;
    writeln!(lua, "wrk.path = \"/\"")?;
    writeln!(lua, "wrk.body = {}", lua_string(&body))?;
    for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
        writeln!(
            lua,
            "wrk.headers[ {} ] = {}",
            lua_string(name),
            lua_string(value)
        )?;
    }
    let key_store = plan.key_store.is_some();
    // Sign, verify and the MACs name their algorithm, as `bench`'s results do (a name KMS
    // spells, of capitals, digits and underscores: nothing to escape in Lua or JSON).
    let algorithm = plan
        .algorithm
        .as_ref()
        .filter(|a| a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map_or(String::new(), |a| format!(r#""algorithm":"{a}","#));
    write!(
        lua,
        r#"
-- One JSON line when the run ends: the connections wrk was given are WRK_CONNECTIONS, or the
-- script's --connections.
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local ok = summary.requests - e.status
  local ms = function(us) return us / 1000.0 end
  io.write(string.format(
    '{{"label":"{label}","loader":"wrk","op":"{op}","keyStore":{key_store},"connections":%d,' ..
    '"plaintextBytes":{bytes},"durationSeconds":%.3f,"requests":%d,"errors":%d,' ..
    '"requestsPerSecond":%.1f,"latencyMs":{{"p50":%.3f,"p90":%.3f,"p99":%.3f,"p999":%.3f,' ..
    '"max":%.3f,"mean":%.3f}},{algorithm}"errorSamples":[]}}\n',
    tonumber(os.getenv("WRK_CONNECTIONS") or "{connections}"), seconds, ok, errors, ok / seconds,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max), ms(latency.mean)))
end
"#,
        label = args.label,
        op = args.op.name(),
        bytes = args.plaintext_bytes,
        connections = args.connections,
    )?;
    Ok(lua)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_hold_any_text() {
        assert_eq!(lua_string("a\"b"), "[[a\"b]]");
        assert_eq!(lua_string("x]]y"), "[=[x]]y]=]");
        assert_eq!(lua_string("x]]y]=]"), "[==[x]]y]=]]==]");
    }
}
