//! The dashboard at `/_hsmkms/ui`, as a person sees it in a browser: headless Chromium driven
//! through chromedriver (Debian's `chromium` and `chromium-driver`, installed by
//! `.ci/install-browser` when missing). It shows the cluster and a key store, the keys of every
//! Region and account, subnet faults set and cleared from the page's buttons (as the control
//! API lists them), an HSM stopped from its button turns unreachable on the page, and a
//! screenshot is saved to `target/dashboard.png` (and to `docs/dashboard.png` with
//! `HSMKMS_UPDATE_SCREENSHOT=1`, the one the README shows).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kms_common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use kms_common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long the page may take to show a change (it refreshes about every second).
const PAGE_LIMIT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen.
const DRIVER_LIMIT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// chromedriver, in a process group of its own, and the Chromium it starts (told apart by its
/// own profile directory). Dropping it kills them all, whether the test passed or not.
struct Browser {
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.driver.id() as i32);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A Chromium process that left the group still names its profile directory.
        let profile = self.profile.to_string_lossy().to_string();
        for pid in processes_naming(&profile) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Processes whose command line contains `needle`.
fn processes_naming(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Installs the browser if needed, starts chromedriver on a free loopback port.
fn start_browser(profile: &Path) -> (Browser, u16) {
    let installed = Command::new("bash")
        .arg(root().join(".ci/install-browser"))
        .status()
        .unwrap();
    assert!(installed.success(), ".ci/install-browser failed");
    let port = free_port();
    let driver = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let browser = Browser {
        driver,
        profile: profile.to_path_buf(),
    };
    wait_until("chromedriver listens", DRIVER_LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (browser, port)
}

async fn connect(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,1800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .unwrap()
}

/// An attribute of the first element `css` selects, if there is one now.
async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.attr(name).await.ok()?
}

/// The text of the first element `css` selects, if there is one now.
async fn text(client: &Client, css: &str) -> Option<String> {
    let element = client.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Clicks the first element `css` selects. The live part is redrawn every second, so a click
/// may meet an element just replaced: it tries again until one takes it.
async fn click(client: &Client, what: &str, css: &str) {
    wait_for(what, || async {
        let element = client.find(Locator::Css(css)).await.ok()?;
        element.click().await.ok()
    })
    .await;
}

/// The subnet faults in force, as `GET /_hsmkms/faults` lists them: `(action, subnetId)`.
fn subnet_faults(emu: &Emulator) -> Vec<(String, String)> {
    let mut faults: Vec<(String, String)> = emu.get_json("/_hsmkms/faults")["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            Some((
                f["action"].as_str()?.to_string(),
                f["subnetId"].as_str()?.to_string(),
            ))
        })
        .collect();
    faults.sort();
    faults
}

/// Waits until the control API lists exactly `want` as the subnet faults in force.
async fn wait_for_subnet_faults(emu: &Emulator, want: &[(&str, &str)]) {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(a, s)| (a.to_string(), s.to_string()))
        .collect();
    want.sort();
    let start = Instant::now();
    loop {
        let now = subnet_faults(emu);
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < PAGE_LIMIT,
            "the faults in force are {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` gives a value, polling the page.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < PAGE_LIMIT, "the page did not show {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_stops_an_hsm_from_the_page() {
    // An emulator with a connected key store, a key in it and a key pending deletion, so every
    // part of the page has something to show.
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("data"), free_port());
    let kms = emu.kms();
    let store = emu.create_connected_store(&kms, "dashboard-store").await;
    let key = create_store_key(&kms, &store).await;
    let key_id = key.key_id().to_string();
    let leaving = create_store_key(&kms, &store).await;
    kms.schedule_key_deletion()
        .key_id(leaving.key_id())
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let cluster = emu.cluster_id();
    let hsms = emu.hsm_ids();
    // A key of another Region and account (the access key id names the account).
    let abroad = create_kms_key(&emu.kms_as("eu-west-1", "222233334444")).await;
    let abroad_id = abroad.key_id().to_string();
    let mut subnets: Vec<String> = describe_cluster(&emu.cloudhsm(), &cluster)
        .await
        .subnet_mapping()
        .unwrap()
        .values()
        .cloned()
        .collect();
    subnets.sort();

    // The browser, killed with everything it started when the test ends, however it ends.
    let profile = tmp.path().join("chromium-profile");
    let (_browser, driver_port) = start_browser(&profile);
    let client = connect(driver_port, &profile).await;
    client.goto(&emu.url("/_hsmkms/ui")).await.unwrap();

    // The cluster, each HSM reachable, the key store CONNECTED, the keys with their states.
    let cluster_css = format!(".cluster[data-cluster='{cluster}']");
    wait_for("the cluster", || text(&client, &cluster_css)).await;
    for hsm in &hsms {
        let css = format!(".hsm[data-hsm='{hsm}']");
        let reachable = wait_for("each HSM", || attr(&client, &css, "data-reachable")).await;
        assert_eq!(reachable, "true", "{hsm} is reachable before any fault");
    }
    let store_css = format!("tr[data-store='{store}'] .conn-state");
    assert_eq!(
        wait_for("the key store", || text(&client, &store_css)).await,
        "CONNECTED"
    );
    let key_css = format!("tr[data-key='{key_id}'] .key-state");
    assert_eq!(
        wait_for("the key", || text(&client, &key_css)).await,
        "Enabled"
    );
    let countdown_css = format!("tr[data-key='{}'] .countdown", leaving.key_id());
    let countdown = wait_for("the deletion countdown", || text(&client, &countdown_css)).await;
    assert!(countdown.starts_with("6d 23h"), "countdown {countdown:?}");

    // Keys of every Region and account are listed, each with its Region and account: the
    // eu-west-1 key beside the home Region's.
    let abroad_css = format!("tr[data-key='{abroad_id}']");
    let abroad_region_css = format!("{abroad_css} .key-region");
    assert_eq!(
        wait_for("the eu-west-1 key", || text(&client, &abroad_region_css)).await,
        "eu-west-1"
    );
    assert_eq!(
        text(&client, &format!("{abroad_css} .key-account"))
            .await
            .as_deref(),
        Some("222233334444")
    );
    assert_eq!(
        text(&client, &format!("tr[data-key='{key_id}'] .key-region"))
            .await
            .as_deref(),
        Some("us-east-1")
    );

    // Subnet faults from the page: delete one subnet and exhaust another with their zones'
    // buttons. The control API lists both, and the page shows them on the zones and in force.
    let (gone, full) = (&subnets[0], &subnets[1]);
    click(
        &client,
        "a delete-subnet button",
        &format!(".subnet[data-subnet='{gone}'] button[data-action='delete-subnet']"),
    )
    .await;
    click(
        &client,
        "an exhaust-subnet button",
        &format!(".subnet[data-subnet='{full}'] button[data-action='exhaust-subnet']"),
    )
    .await;
    wait_for_subnet_faults(&emu, &[("delete-subnet", gone), ("exhaust-subnet", full)]).await;
    let gone_css = format!(".subnet[data-subnet='{gone}']");
    wait_for("the deleted subnet marked", || async {
        (attr(&client, &gone_css, "data-deleted").await.as_deref() == Some("true")).then_some(())
    })
    .await;
    let in_force_css = format!("tr.fault[data-fault='exhaust-subnet'][data-on='{full}']");
    wait_for("the exhausted subnet in force", || {
        text(&client, &in_force_css)
    })
    .await;

    // Reverted from the page: the deleted subnet with its row's button in the faults in force,
    // then the rest with "clear all faults".
    click(
        &client,
        "the restore-subnet button of the fault",
        &format!("tr.fault[data-fault='delete-subnet'] button[data-action='restore-subnet'][data-subnet='{gone}']"),
    )
    .await;
    wait_for_subnet_faults(&emu, &[("exhaust-subnet", full)]).await;
    click(
        &client,
        "the clear button",
        "#fault-controls button[data-action='clear']",
    )
    .await;
    wait_for_subnet_faults(&emu, &[]).await;
    wait_for("no fault in force on the page", || async {
        client
            .find(Locator::Css("tr.fault"))
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // Stop the first HSM with its button on the page; the page shows it unreachable.
    let victim = &hsms[0];
    let stop_css = format!(".hsm[data-hsm='{victim}'] button[data-action='stop']");
    click(&client, "a stop button that takes the click", &stop_css).await;
    let victim_css = format!(".hsm[data-hsm='{victim}']");
    wait_for("the stopped HSM unreachable", || async {
        (attr(&client, &victim_css, "data-reachable")
            .await
            .as_deref()
            == Some("false"))
        .then_some(())
    })
    .await;
    let message = text(&client, "#message").await.unwrap_or_default();
    assert!(message.contains("done"), "the page says {message:?}");
    // The other HSM still serves, and the page still answers.
    let other_css = format!(".hsm[data-hsm='{}']", hsms[1]);
    assert_eq!(
        attr(&client, &other_css, "data-reachable").await.as_deref(),
        Some("true")
    );

    // Move the clock a day forward with its button: the countdown follows the emulator clock.
    let day_css = "button[data-advance='86400']";
    click(&client, "a clock button that takes the click", day_css).await;
    wait_for("the countdown a day shorter", || async {
        let left = text(&client, &countdown_css).await?;
        left.starts_with("5d 23h").then_some(())
    })
    .await;

    // What a person sees, kept for the README.
    let png = client.screenshot().await.unwrap();
    std::fs::create_dir_all(root().join("target")).unwrap();
    std::fs::write(root().join("target/dashboard.png"), &png).unwrap();
    if std::env::var_os("HSMKMS_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root().join("docs/dashboard.png"), &png).unwrap();
    }

    // Choosing eu-west-1's account lists its keys only; the home Region's are not listed.
    click(
        &client,
        "the eu-west-1 link",
        "a.scope[data-scope='eu-west-1/222233334444']",
    )
    .await;
    wait_for("only the eu-west-1 keys", || async {
        let home_gone = client
            .find(Locator::Css(&format!("tr[data-key='{key_id}']")))
            .await
            .is_err();
        let chosen = attr(&client, "a.scope.chosen", "data-scope").await;
        (home_gone && chosen.as_deref() == Some("eu-west-1/222233334444")).then_some(())
    })
    .await;
    assert!(text(&client, &abroad_css).await.is_some());
    // The live part keeps the choice as it refreshes.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        client
            .find(Locator::Css(&format!("tr[data-key='{key_id}']")))
            .await
            .is_err(),
        "the refreshed page still lists eu-west-1's keys only"
    );
    assert!(text(&client, &abroad_css).await.is_some());
    client.close().await.unwrap();
}
