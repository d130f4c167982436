//! `hsmkms hsm-cli`: the emulator's counterpart of the CloudHSM CLI, the tool the AWS guide
//! uses to find and remove orphaned key material. It talks the node protocol to one HSM, with
//! the cluster's client certificate from the data directory.
//!
//! Two modes: with a command it runs that one command (logging in first when `--username`,
//! `--role` and `--password` are given); without one it reads commands from standard input,
//! one per line, with `login` and `logout` as in the CloudHSM CLI's interactive mode.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hsmkms_common::client::NodeClient;
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{KeyAttributes, Request, Response, Role};
use serde_json::json;

use crate::cluster::ClusterDir;

/// Deadline of one CLI call (a key generation waits for its quorum).
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Options of `hsmkms hsm-cli`.
#[derive(Debug, Args)]
pub struct CliArgs {
    /// The emulator's data directory (for the cluster's addresses and client certificate).
    #[arg(long, env = "HSMKMS_DATA_DIR", default_value = "./hsmkms-data")]
    pub data_dir: PathBuf,
    /// The cluster to talk to (default: the first cluster of the data directory).
    #[arg(long, env = "HSMKMS_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Address (`host:port`) of the HSM to talk to.
    #[arg(long, conflicts_with = "hsm")]
    pub node: Option<String>,
    /// Id of the HSM to talk to (default: the first HSM of the cluster).
    #[arg(long)]
    pub hsm: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Log in as this user before running the command.
    #[arg(long, requires_all = ["role", "password"])]
    pub username: Option<String>,
    /// Role of `--username`: `admin` or `crypto-user`.
    #[arg(long)]
    pub role: Option<String>,
    /// Password of `--username`.
    #[arg(long, env = "HSMKMS_CLI_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// CLI commands, named as in the CloudHSM CLI.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in (interactive mode).
    Login(Login),
    /// Log out.
    Logout,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// What the HSM knows of the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Leave interactive mode.
    #[command(alias = "exit")]
    Quit,
}

#[derive(Debug, Args)]
pub struct Login {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub role: String,
    #[arg(long)]
    pub password: String,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users.
    List,
    /// Create a user (crypto officer only).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        password: String,
    },
    /// Delete a user that owns no keys (crypto officer only).
    Delete {
        #[arg(long)]
        username: String,
    },
    /// Change a user's password (a crypto officer may change any; this also unlocks it).
    ChangePassword {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a non-extractable AES key owned by the logged-in crypto user.
    GenerateAes {
        #[arg(long)]
        label: String,
        #[arg(long, default_value_t = 32)]
        key_length_bytes: u32,
    },
    /// List keys, optionally filtered by label and owner.
    List {
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        owner: Option<String>,
    },
    /// Delete a key (its owner only), on every HSM of the cluster.
    Delete {
        #[arg(long)]
        handle: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The cluster's members and this HSM's links to them.
    Status,
    /// Activate a new, initialized cluster: set the admin's password (the unactivated admin's
    /// is `password`). The CloudHSM service then turns the cluster ACTIVE.
    Activate {
        #[arg(long)]
        password: String,
    },
}

/// One line of interactive mode.
#[derive(Debug, Parser)]
#[command(name = "", no_binary_name = true, disable_help_flag = false)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

fn parse_role(s: &str) -> Result<Role> {
    Role::from_cli_name(s).ok_or_else(|| anyhow!("unknown role {s:?}: use admin or crypto-user"))
}

fn key_json(k: &KeyAttributes) -> serde_json::Value {
    json!({
        "handle": k.handle,
        "label": k.label,
        "owner": k.owner,
        "class": "secret-key",
        "key-type": "aes",
        "length-bytes": k.length_bytes,
        "extractable": k.extractable,
        "token": k.token,
        "created-at-millis": k.created_at_millis,
    })
}

fn key_table(keys: &[KeyAttributes]) -> String {
    let mut out = format!(
        "{:<14} {:<8} {:<10} {:<7} {:<11} label\n",
        "handle", "owner", "class", "length", "extractable"
    );
    for k in keys {
        out.push_str(&format!(
            "{:<14} {:<8} {:<10} {:<7} {:<11} {}\n",
            k.handle, k.owner, "secret-key", k.length_bytes, k.extractable, k.label
        ));
    }
    out.push_str(&format!("{} key(s)", keys.len()));
    out
}

/// Runs one command; returns what to print.
async fn execute(client: &NodeClient, command: Command, as_json: bool) -> Result<String> {
    let call = |req: Request| client.call(req, CALL_DEADLINE);
    let (text, value) = match command {
        Command::Login(l) => {
            let role = parse_role(&l.role)?;
            match call(Request::Login {
                username: l.username,
                role,
                password: SecretString::new(l.password),
            })
            .await?
            {
                Response::LoggedIn { username, role } => (
                    format!("logged in as {username} ({})", role.cli_name()),
                    json!({"username": username, "role": role.cli_name()}),
                ),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Logout => {
            call(Request::Logout).await?;
            ("logged out".to_string(), json!({"logged-out": true}))
        }
        Command::User(UserCommand::List) => match call(Request::ListUsers).await? {
            Response::Users(users) => {
                let mut text = format!(
                    "{:<32} {:<12} {:<7} sessions\n",
                    "username", "role", "locked"
                );
                for u in &users {
                    text.push_str(&format!(
                        "{:<32} {:<12} {:<7} {}\n",
                        u.username,
                        u.role.cli_name(),
                        u.locked,
                        u.sessions
                    ));
                }
                text.push_str(&format!("{} user(s)", users.len()));
                let list: Vec<_> = users
                    .iter()
                    .map(|u| json!({"username": u.username, "role": u.role.cli_name(), "locked": u.locked, "sessions": u.sessions}))
                    .collect();
                (text, json!({ "users": list }))
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::User(UserCommand::Create {
            username,
            role,
            password,
        }) => {
            let role = parse_role(&role)?;
            call(Request::CreateUser {
                username: username.clone(),
                role,
                password: SecretString::new(password),
            })
            .await?;
            (
                format!("user {username} created"),
                json!({"username": username, "role": role.cli_name()}),
            )
        }
        Command::User(UserCommand::Delete { username }) => {
            call(Request::DeleteUser {
                username: username.clone(),
            })
            .await?;
            (
                format!("user {username} deleted"),
                json!({"username": username, "deleted": true}),
            )
        }
        Command::User(UserCommand::ChangePassword {
            username,
            role,
            password,
        }) => {
            call(Request::ChangePassword {
                username: username.clone(),
                role: parse_role(&role)?,
                new_password: SecretString::new(password),
            })
            .await?;
            (
                format!("password of {username} changed"),
                json!({"username": username, "password-changed": true}),
            )
        }
        Command::Key(KeyCommand::GenerateAes {
            label,
            key_length_bytes,
        }) => match call(Request::GenerateAesKey {
            label,
            length_bytes: key_length_bytes,
        })
        .await?
        {
            Response::KeyCreated { key, durable_on } => (
                format!(
                    "generated key {} (label {}), durable on {}",
                    key.handle,
                    key.label,
                    durable_on.join(", ")
                ),
                json!({"key": key_json(&key), "durable-on": durable_on}),
            ),
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Key(KeyCommand::List { label, owner }) => {
            match call(Request::FindKeys { label, owner }).await? {
                Response::Keys(keys) => (
                    key_table(&keys),
                    json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
                ),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Key(KeyCommand::Delete { handle }) => {
            match call(Request::DeleteKey { handle }).await? {
                Response::KeyDeleted { handle, outcomes } => {
                    let mut text = format!("deleted key {handle}");
                    for o in &outcomes {
                        let status = if o.success { "SUCCESS" } else { "FAILURE" };
                        text.push_str(&format!("\n  {}: {status} ({})", o.hsm_id, o.detail));
                    }
                    let list: Vec<_> = outcomes
                        .iter()
                        .map(|o| json!({"hsm-id": o.hsm_id, "status": if o.success {"SUCCESS"} else {"FAILURE"}, "detail": o.detail}))
                        .collect();
                    (text, json!({"handle": handle, "hsms": list}))
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Cluster(ClusterCommand::Activate { password }) => {
            let login = call(Request::Login {
                username: "admin".into(),
                role: Role::CryptoOfficer,
                password: SecretString::new(
                    crate::provisioner::UNACTIVATED_ADMIN_PASSWORD.to_string(),
                ),
            })
            .await;
            if login.is_err() {
                bail!("the cluster is activated already (the admin's password is set)");
            }
            call(Request::ChangePassword {
                username: "admin".into(),
                role: Role::CryptoOfficer,
                new_password: SecretString::new(password),
            })
            .await?;
            call(Request::Logout).await?;
            (
                "cluster activated: the admin's password is set".to_string(),
                json!({"activated": true}),
            )
        }
        Command::Cluster(ClusterCommand::Status) => match call(Request::Status).await? {
            Response::Status(s) => {
                let storage = match &s.storage_failing {
                    Some(why) => format!("failing: {why}"),
                    None => "ok".to_string(),
                };
                let mut text = format!(
                    "{} in {} ({}): {} key(s), {} user(s), storage {storage}\nmembers:",
                    s.hsm_id, s.cluster_id, s.availability_zone, s.key_count, s.user_count
                );
                for m in &s.members {
                    let link = if m.hsm_id == s.hsm_id {
                        "this HSM"
                    } else if s.connected_peers.contains(&m.hsm_id) {
                        "connected"
                    } else {
                        "not connected"
                    };
                    text.push_str(&format!(
                        "\n  {} {} {} ({link})",
                        m.hsm_id, m.availability_zone, m.address
                    ));
                }
                let members: Vec<_> = s
                    .members
                    .iter()
                    .map(|m| json!({"hsm-id": m.hsm_id, "availability-zone": m.availability_zone, "address": m.address, "connected": m.hsm_id == s.hsm_id || s.connected_peers.contains(&m.hsm_id)}))
                    .collect();
                (
                    text,
                    json!({"hsm-id": s.hsm_id, "cluster-id": s.cluster_id, "availability-zone": s.availability_zone, "key-count": s.key_count, "user-count": s.user_count, "storage-failing": s.storage_failing, "members": members}),
                )
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Quit => return Ok(String::new()),
    };
    Ok(if as_json { value.to_string() } else { text })
}

/// Connects to the chosen HSM of the cluster in the data directory.
async fn connect(args: &CliArgs) -> Result<NodeClient> {
    let cluster =
        ClusterDir::open_in(&args.data_dir, args.cluster_id.as_deref()).with_context(|| {
            format!(
                "no hsmkms cluster in {} (start hsmkms first, or pass --data-dir)",
                args.data_dir.display()
            )
        })?;
    let address = match (&args.node, &args.hsm) {
        (Some(address), _) => address.clone(),
        (None, Some(hsm)) => cluster
            .info
            .hsms
            .iter()
            .find(|h| &h.hsm_id == hsm)
            .map(|h| h.address.clone())
            .ok_or_else(|| anyhow!("the cluster has no HSM {hsm}"))?,
        (None, None) => cluster
            .info
            .hsms
            .first()
            .map(|h| h.address.clone())
            .ok_or_else(|| anyhow!("the cluster has no HSM"))?,
    };
    Ok(NodeClient::connect(&address, cluster.client_tls()?, CALL_DEADLINE).await?)
}

/// Runs `hsmkms hsm-cli`. Returns the process's exit code.
pub async fn run(args: CliArgs) -> Result<i32> {
    let client = connect(&args).await?;
    if let (Some(username), Some(role), Some(password)) =
        (&args.username, &args.role, &args.password)
    {
        let login = Command::Login(Login {
            username: username.clone(),
            role: role.clone(),
            password: password.clone(),
        });
        execute(&client, login, args.json).await?;
    }
    if let Some(command) = args.command {
        println!("{}", execute(&client, command, args.json).await?);
        return Ok(0);
    }
    // Interactive mode: one command per line until end of input or `quit`.
    let interactive = std::io::stdin().is_terminal();
    let mut failures = 0;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            print!("hsm-cli > ");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let Some(words) = shlex::split(&line) else {
            eprintln!("error: unbalanced quotes");
            failures += 1;
            continue;
        };
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let command = match Line::try_parse_from(words) {
            Ok(l) => l.command,
            Err(e) => {
                eprintln!("{e}");
                failures += 1;
                continue;
            }
        };
        if matches!(command, Command::Quit) {
            break;
        }
        match execute(&client, command, args.json).await {
            Ok(out) => println!("{out}"),
            Err(e) => {
                eprintln!("error: {e}");
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}
