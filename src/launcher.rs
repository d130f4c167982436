//! `hsmkms` (no subcommand): creates or reopens the cluster in the data directory, starts its
//! HSMs (in-process, or as supervised `hsm-node` processes), waits until they serve and are
//! linked to each other, prints `Ready.`, and runs until Ctrl-C or SIGTERM.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::{bail, Context, Result};
use clap::Args;
use hsm_node::cli::{wait_for_termination, LogFormat};
use hsmkms_common::client::NodeClient;
use hsmkms_common::clock::{Clock, SystemClock};
use hsmkms_common::secret::SecretString;
use hsmkms_common::wire::{Request, Response};
use kms_frontend::access_keys::AccessKeys;
use kms_frontend::api::auth::{Auth, Strict};

use crate::cluster::{ClusterDir, ClusterSpec};
use crate::provisioner::{LauncherProvisioner, Runner};
use crate::supervisor::Supervisor;

/// How long the cluster may take to serve before start-up fails.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A password given as an option: typed from the moment clap parses it (clap wants `Clone`
/// values; this shares the one zeroizing copy instead of making more).
#[derive(Debug, Clone)]
pub struct PasswordArg(pub Arc<SecretString>);

impl std::str::FromStr for PasswordArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(Arc::new(SecretString::new(s))))
    }
}

/// Options of the emulator; each has an `HSMKMS_*` environment variable.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where keys, key stores, the cluster and its HSMs live.
    #[arg(long, env = "HSMKMS_DATA_DIR", default_value = "./hsmkms-data")]
    pub data_dir: PathBuf,
    /// Port of the KMS and CloudHSMv2 frontend, on 127.0.0.1.
    #[arg(long, env = "HSMKMS_PORT", default_value_t = 4599)]
    pub port: u16,
    /// HSMs in the cluster created on first start (later starts keep the cluster's HSMs).
    #[arg(long, env = "HSMKMS_HSMS", default_value_t = 2)]
    pub hsms: usize,
    /// Run each HSM as a separate `hsm-node` process, supervised and restarted if it dies.
    #[arg(long, env = "HSMKMS_HSM_PROCESSES")]
    pub hsm_processes: bool,
    /// AWS Region the emulator reports (and whose Availability Zones hold the HSMs).
    #[arg(long, env = "HSMKMS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// AWS account id in ARNs.
    #[arg(long, env = "HSMKMS_ACCOUNT_ID", default_value = "111122223333")]
    pub account_id: String,
    /// Initial password of the cluster's `kmsuser` crypto user (7-32 letters and digits).
    #[arg(
        long,
        env = "HSMKMS_KMSUSER_PASSWORD",
        default_value = "kmsPassword1",
        hide_env_values = true
    )]
    pub kmsuser_password: PasswordArg,
    /// Initial password of the cluster's `admin` crypto officer (7-32 characters).
    #[arg(
        long,
        env = "HSMKMS_ADMIN_PASSWORD",
        default_value = "adminPassword1",
        hide_env_values = true
    )]
    pub admin_password: PasswordArg,
    /// Log format.
    #[arg(long, env = "HSMKMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Total size the audit trail's files may take (it rotates in four files); the events'
    /// files have the same cap.
    #[arg(long, env = "HSMKMS_AUDIT_MAX_BYTES", default_value_t = kms_frontend::audit::DEFAULT_MAX_BYTES)]
    pub audit_max_bytes: u64,
    /// Longest a KMS or CloudHSM request may take, in seconds, before it is answered
    /// DependencyTimeoutException (CloudHsmInternalFailureException); what it started still
    /// finishes.
    #[arg(long, env = "HSMKMS_REQUEST_DEADLINE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_deadline: u64,
    /// CloudHSM clusters the account may have (not DELETED), the launcher's own included:
    /// CloudHSM's adjustable quota, 4 per account and Region by default.
    #[arg(long, env = "HSMKMS_MAX_CLUSTERS", default_value_t = kms_frontend::service::cloudhsm::DEFAULT_MAX_CLUSTERS)]
    pub max_clusters: usize,
    /// CloudHSM HSMs the account may have in every cluster together, the launcher's cluster's
    /// included: CloudHSM's adjustable quota, 6 per account and Region by default.
    #[arg(long, env = "HSMKMS_MAX_HSMS", default_value_t = kms_frontend::service::cloudhsm::DEFAULT_MAX_HSMS)]
    pub max_hsms: usize,
    /// How KMS and CloudHSMv2 requests are authenticated: `any` accepts any credentials (no
    /// signature is checked); `strict` checks every SigV4 signature against the access keys of
    /// --credentials-file and HSMKMS_ACCESS_KEYS, and the control API needs --control-token.
    #[arg(long, env = "HSMKMS_AUTH", value_enum, default_value_t = AuthMode::Any)]
    pub auth: AuthMode,
    /// An AWS shared credentials file (INI, like ~/.aws/credentials): every profile's
    /// aws_access_key_id / aws_secret_access_key pair is accepted in strict mode.
    #[arg(long, env = "HSMKMS_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Access keys accepted in strict mode, as `AKID:SECRET,AKID2:SECRET2` (with
    /// --credentials-file, both sets are accepted). Prefer the environment variable: options
    /// show in the process list.
    #[arg(long, env = "HSMKMS_ACCESS_KEYS", hide_env_values = true)]
    pub access_keys: Option<PasswordArg>,
    /// The control API's token in strict mode, sent as `Authorization: Bearer <token>`; strict
    /// mode refuses to start without one.
    #[arg(long, env = "HSMKMS_CONTROL_TOKEN", hide_env_values = true)]
    pub control_token: Option<PasswordArg>,
    /// Seeded keys and custom key stores (YAML or JSON): fixed ids, specs, aliases, tags,
    /// policies, rotation and material; stores' names, clusters and whether they connect; made
    /// at start where missing and again by `POST /_hsmkms/reset` (see the README's "Seeded
    /// keys").
    #[arg(long, env = "HSMKMS_SEED_FILE")]
    pub seed_file: Option<PathBuf>,
}

/// `--auth`: whether signatures are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Any credentials are accepted (the default, as before strict mode existed).
    Any,
    /// SigV4 signatures are checked; the control API needs the control token.
    Strict,
}

/// The authentication the options ask for; strict mode without access keys or a control
/// token is refused before anything starts.
pub fn auth_from(args: &RunArgs, clock: Arc<dyn Clock>) -> Result<Auth> {
    if args.auth == AuthMode::Any {
        if args.credentials_file.is_some()
            || args.access_keys.is_some()
            || args.control_token.is_some()
        {
            tracing::warn!(
                "access keys and a control token are used only with --auth strict; any credentials are accepted"
            );
        }
        return Ok(Auth::Any);
    }
    let mut keys = AccessKeys::default();
    if let Some(path) = &args.credentials_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the credentials file {}", path.display()))?;
        keys.add_credentials_file(&text, &path.display().to_string())
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(list) = &args.access_keys {
        keys.add_list(list.0.expose(), "HSMKMS_ACCESS_KEYS (--access-keys)")
            .map_err(anyhow::Error::msg)?;
    }
    if keys.is_empty() {
        bail!(
            "--auth strict needs access keys: --credentials-file FILE (profiles with aws_access_key_id and aws_secret_access_key) or HSMKMS_ACCESS_KEYS=AKID:SECRET[,AKID2:SECRET2...]"
        );
    }
    let token = match &args.control_token {
        Some(token) if !token.0.expose().trim().is_empty() => token.0.duplicate(),
        _ => bail!(
            "--auth strict needs a control token for the control API (/_hsmkms/...): set HSMKMS_CONTROL_TOKEN (or --control-token); clients send it as 'Authorization: Bearer <token>'"
        ),
    };
    tracing::info!(
        access_keys = keys.len(),
        "strict authentication: SigV4 signatures are checked"
    );
    Ok(Auth::Strict(Arc::new(Strict::new(keys, token, clock))))
}

/// Runs the emulator until a termination signal.
pub async fn run(args: RunArgs) -> Result<()> {
    hsm_node::cli::init_logging(args.log_format);
    raise_open_file_limit();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Checked first: a strict emulator missing its keys must not start at all.
    let auth = auth_from(&args, clock.clone())?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let spec = ClusterSpec {
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        hsms: args.hsms,
        admin_password: args.admin_password.0.duplicate(),
        kmsuser_password: args.kmsuser_password.0.duplicate(),
        host: "127.0.0.1".into(),
    };
    // A cluster reset a stop interrupted is finished (or, if undecided, undone) first.
    if crate::reset::finish_at_start(&args.data_dir)? {
        tracing::info!("the interrupted cluster reset is finished");
    }
    let cluster = ClusterDir::open_or_create(&args.data_dir, &spec, clock.as_ref()).await?;
    let local: Vec<_> = cluster
        .info
        .hsms
        .iter()
        .filter(|h| !h.external)
        .cloned()
        .collect();
    if local.len() != args.hsms {
        tracing::info!(
            hsms = local.len(),
            "the cluster in {} already has its HSMs; --hsms applies when a cluster is created",
            args.data_dir.display()
        );
    }
    tracing::info!(
        cluster_id = %cluster.info.cluster_id,
        trust_anchor = %args.data_dir.join(crate::cluster::TRUST_ANCHOR_FILE).display(),
        "cluster ACTIVE"
    );

    let runner = if args.hsm_processes {
        let exe = std::env::current_exe().context("finding the hsmkms executable")?;
        Runner::Processes(Supervisor::new(exe, args.log_format))
    } else {
        Runner::InProcess(std::sync::Mutex::new(Default::default()))
    };
    let data_dir = args.data_dir.clone();
    let provisioner = Arc::new(
        LauncherProvisioner::start(&data_dir, "127.0.0.1", clock.clone(), runner)?
            .with_reset_spec(spec.duplicate()),
    );

    for dir in provisioner.cluster_dirs() {
        if let Err(e) = wait_until_serving(&dir).await {
            provisioner.shutdown().await;
            return Err(e);
        }
    }
    // HSMs whose recorded port was taken listen on another: the cluster learns where.
    provisioner.refresh_addresses()?;
    for dir in provisioner.cluster_dirs() {
        for h in dir.info.hsms.iter().filter(|h| !h.external) {
            tracing::info!(cluster_id = %dir.info.cluster_id, hsm_id = %h.hsm_id, availability_zone = %h.availability_zone, address = %h.address, "HSM ACTIVE");
        }
    }

    // The KMS frontend, in front of the clusters.
    let started = start_frontend(&args, provisioner.clone(), clock.clone(), auth).await;
    let (frontend, server, store_thread) = match started {
        Ok(s) => s,
        Err(e) => {
            provisioner.shutdown().await;
            return Err(e);
        }
    };
    let scheduler =
        kms_frontend::actors::scheduler::DeletionScheduler::new(frontend.clone()).start();
    tracing::info!(endpoint = %format!("http://127.0.0.1:{}", args.port), "KMS and CloudHSMv2 serving");
    println!("Ready.");
    let _ = std::io::stdout().flush();

    wait_for_termination().await?;
    tracing::info!("shutting down");
    server.stop(true).await;
    // Every acknowledged change was fsync'd before it was acknowledged, so the frontend's store
    // needs no flushing; its thread ends with the process.
    drop((scheduler, frontend, store_thread));
    provisioner.shutdown().await;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every client connection, HSM session
/// and peer link is a descriptor, and 1,024 (a common default) runs out under load long before
/// the request deadlines close the stalled ones.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
            }
        }
    }
}

type StartedFrontend = (
    Arc<kms_frontend::Frontend>,
    actix_web::dev::ServerHandle,
    std::thread::JoinHandle<()>,
);

/// The seed file's keys and stores, checked; a file that cannot be read or has a bad key or
/// store stops the start. A store that names no kmsuser password gets the cluster's first one.
fn read_seed(
    path: Option<&std::path::Path>,
    kmsuser_password: &SecretString,
) -> Result<Option<std::sync::Arc<kms_frontend::service::seed::Seed>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the seed file {}", path.display()))?;
    let seed = kms_frontend::service::seed::Seed::parse(&text)
        .map_err(|why| anyhow::anyhow!("the seed file {}: {why}", path.display()))?
        .with_default_kmsuser_password(kmsuser_password);
    Ok(Some(std::sync::Arc::new(seed)))
}

/// Opens the frontend's state, rebuilds what must be running (connected key stores log in
/// again, interrupted deletions finish), then serves.
async fn start_frontend(
    args: &RunArgs,
    provisioner: Arc<LauncherProvisioner>,
    clock: Arc<dyn Clock>,
    auth: Auth,
) -> Result<StartedFrontend> {
    let (frontend, store_thread) = kms_frontend::Frontend::open(kms_frontend::FrontendOptions {
        dir: args.data_dir.join("kms"),
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        provisioner,
        base_clock: clock,
        audit_max_bytes: args.audit_max_bytes,
        request_deadline: Duration::from_secs(args.request_deadline),
        entropy: std::sync::Arc::new(hsmkms_common::entropy::OsEntropy),
        cloudhsm_quotas: kms_frontend::service::cloudhsm::Quotas {
            clusters: args.max_clusters,
            hsms: args.max_hsms,
        },
        seed: read_seed(args.seed_file.as_deref(), &args.kmsuser_password.0)?,
    })?;
    frontend.recover().await;
    let seeded = frontend
        .apply_seed()
        .await
        .map_err(|e| anyhow::anyhow!("applying the seed file: {e}"))?;
    if seeded > 0 {
        tracing::info!(seeded, "seeded keys and custom key stores made");
    }
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = kms_frontend::serve(frontend.clone(), bind, 2, auth)
        .with_context(|| format!("binding the KMS endpoint on {bind}"))?;
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((frontend, handle, store_thread))
}

/// Waits until every local HSM answers and is linked to every other local HSM.
pub async fn wait_until_serving(cluster: &ClusterDir) -> Result<()> {
    let tls = cluster.client_tls()?;
    let local: Vec<_> = cluster.info.hsms.iter().filter(|h| !h.external).collect();
    let ids: BTreeSet<String> = local.iter().map(|h| h.hsm_id.clone()).collect();
    let started = Instant::now();
    let mut waiting: Vec<String> = ids.iter().cloned().collect();
    while !waiting.is_empty() {
        if started.elapsed() > READY_DEADLINE {
            bail!(
                "HSMs not serving after {READY_DEADLINE:?}: {}",
                waiting.join(", ")
            );
        }
        let mut still = Vec::new();
        for h in &local {
            if !waiting.contains(&h.hsm_id) {
                continue;
            }
            // Where it listens now: an HSM whose port was taken records another.
            let address = hsm_node::config::advertised_address(&cluster.node_dir(h))
                .unwrap_or_else(|_| h.address.clone());
            let ok = async {
                let client = NodeClient::connect(&address, tls.clone(), Duration::from_secs(2))
                    .await
                    .ok()?;
                match client
                    .call(Request::Status, Duration::from_secs(2))
                    .await
                    .ok()?
                {
                    Response::Status(s) => {
                        let linked: BTreeSet<String> =
                            s.connected_peers.into_iter().chain([s.hsm_id]).collect();
                        Some(ids.is_subset(&linked))
                    }
                    _ => Some(false),
                }
            }
            .await
            .unwrap_or(false);
            if !ok {
                still.push(h.hsm_id.clone());
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
