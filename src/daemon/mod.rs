//! `nginx-ha run`: wiring, signals, sd_notify, and the shutdown order.

pub mod upgrade;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::alias::{self, AliasHandle, AliasSettings};
use crate::anycast::{self, AnycastHandle, AnycastSpec};
use crate::config::Config;
use crate::control::metrics::StatusSettings;
use crate::control::server::{ControlServer, Incoming};
use crate::control::status::{DaemonReport, StatusDocument};
use crate::control::{Request, Response};
use crate::drain::{self, DrainHandle};
use crate::nginx::policy::{CommandError, NginxState};
use crate::nginx::supervisor::{self, Command, SupervisorConfig, SupervisorHandle};
use crate::vrrp::shell::{self as vrrp, VrrpHandle};
use crate::vrrp::spec::RouterSpec;

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    upgrader: upgrade::Upgrader,
    started_at_ms: u64,
    supervisor: SupervisorHandle,
    vrrp: Option<VrrpHandle>,
    /// Static aliases; they stay on a planned stop.
    aliases: AliasHandle,
    anycast: Option<AnycastHandle>,
    /// The connection drain, when a router has one: its handle and its task.
    drain: Option<(DrainHandle, tokio::task::JoinHandle<()>)>,
    notified_ready: bool,
    /// Where the metrics read nginx's stub_status (`[health]`, applied by `nginx-ha reload`).
    metrics_settings: watch::Sender<StatusSettings>,
    /// Tasks that wait for the supervisor's answer to a request and pass it on (a reload can
    /// take a while and the loop must go on); aborted with the daemon.
    replies: JoinSet<()>,
}

/// Why the main loop ended.
enum Exit {
    /// SIGTERM or SIGINT: the planned stop.
    Planned,
    /// A task the daemon cannot run without ended: the daemon exits non-zero (systemd's
    /// `Restart=on-failure` brings it back, and it adopts the running nginx).
    Lost(String),
}

/// Runs until SIGTERM/SIGINT; returns once nginx is stopped. Every task the daemon starts is
/// owned here: the supervisor, the VRRP task and the control/metrics listeners are selected on,
/// so the loss of any of them is noticed at once.
pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    // Orphans of a dead nginx master come to us, so we can kill and reap them (they would hold
    // the listen sockets and block the restart).
    nix::sys::prctl::set_child_subreaper(true).context("cannot become the child subreaper")?;

    let (requests_tx, mut requests) = mpsc::channel::<Incoming>(16);
    // The listeners: each is a task that never ends on its own.
    let mut listeners = JoinSet::new();
    let (metrics_settings, metrics_settings_rx) = watch::channel(StatusSettings::from_config(&config.health));
    if let Some(listen) = &config.daemon.metrics_listen {
        let address = listen.parse().context("[daemon] metrics_listen was validated")?;
        listeners.spawn(crate::control::metrics::bind(address, requests_tx.clone(), metrics_settings_rx).await?);
        info!(%address, "serving Prometheus metrics");
    }
    let policy = access_policy(&config)?;
    let (_control, accept) = ControlServer::start(&config.daemon.control_socket, policy, requests_tx).await?;
    listeners.spawn(accept);
    info!(socket = %config.daemon.control_socket.display(), config = %config_path.display(), "nginx-ha started");

    // Before nginx, which may listen on the aliases.
    let aliases = alias::spawn(AliasSettings::from_config(&config)).await;
    let supervisor = supervisor::spawn(SupervisorConfig::from_config(&config));
    // The routers follow nginx's health; they stay in INIT until nginx first serves.
    let specs = RouterSpec::from_config(&config);
    // Before the routers, which hand their VIPs over through it.
    let drain = if specs.iter().any(|spec| !spec.router.drain.is_zero()) {
        match drain::shell::spawn(config.daemon.drain_port).await {
            Ok(drain) => Some(drain),
            Err(e) => {
                error!("the connection drain cannot start ({e}): VIPs move without it");
                None
            }
        }
    } else {
        None
    };
    let vrrp = if specs.is_empty() {
        None
    } else {
        let handle = drain.as_ref().map(|(handle, _)| handle.clone());
        match vrrp::spawn(specs.clone(), supervisor.health.clone(), &config.daemon.state_dir, handle).await {
            Ok(handle) => Some(handle),
            Err(e) => {
                let _ = supervisor.commands.send(Command::Shutdown).await;
                let _ = supervisor.task.await;
                return Err(e.into());
            }
        }
    };
    // The announcements follow nginx's health too; the addresses are held from now on.
    let anycast = if config.anycast.is_empty() {
        None
    } else {
        match anycast::spawn(AnycastSpec::from_config(&config), supervisor.health.clone()).await {
            Ok(handle) => Some(handle),
            Err(e) => {
                if let Some(vrrp) = &vrrp {
                    vrrp.shutdown().await;
                }
                let _ = supervisor.commands.send(Command::Shutdown).await;
                let _ = supervisor.task.await;
                return Err(e.into());
            }
        }
    };
    let started_at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut daemon = Daemon {
        config_path: config_path.to_path_buf(),
        upgrader: upgrade::Upgrader::new(config_path),
        started_at_ms,
        config,
        supervisor,
        vrrp,
        aliases,
        anycast,
        drain,
        notified_ready: false,
        metrics_settings,
        replies: JoinSet::new(),
    };

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigusr2 = signal(SignalKind::user_defined2())?;
    let mut watchdog = watchdog_interval().map(tokio::time::interval);
    let mut status = daemon.supervisor.status.clone();

    let exit = loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break Exit::Planned; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break Exit::Planned; }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading");
                let (reply, _) = oneshot::channel();
                daemon.reload(reply).await;
            }
            _ = sigusr2.recv() => {
                info!("SIGUSR2: upgrading in place");
                let (reply, _) = oneshot::channel();
                daemon.upgrade(reply).await;
            }
            Some((request, reply)) = requests.recv() => daemon.request(request, reply).await,
            changed = status.changed() => {
                if changed.is_err() {
                    break Exit::Lost("the nginx supervisor stopped unexpectedly".into());
                }
                daemon.notify_state();
            }
            ended = vrrp_task(&mut daemon.vrrp) => {
                // Nobody advertises for our VIPs any more: the peer takes over after its
                // master-down interval, and until then both would answer ARP for them.
                let started = std::time::Instant::now();
                let removed = vrrp::release_vips(&specs).await;
                error!(
                    removed,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "the VRRP task ended ({}); removed this node's VIPs",
                    describe(ended)
                );
                daemon.vrrp = None;
                break Exit::Lost(
                    "the VRRP task ended unexpectedly; VIPs removed, nginx left running for the next nginx-ha to adopt"
                        .into(),
                );
            }
            Some(ended) = listeners.join_next() => {
                break Exit::Lost(format!(
                    "a control listener ended unexpectedly ({}); nginx left running for the next nginx-ha to adopt",
                    describe(ended)
                ));
            }
            ended = &mut daemon.aliases.task => {
                break Exit::Lost(format!(
                    "the alias task ended unexpectedly ({}); nginx left running for the next nginx-ha to adopt",
                    describe(ended)
                ));
            }
            ended = drain_ended(&mut daemon.drain) => {
                // Its programs and local routes went with it; the VIPs stay where they are.
                daemon.drain = None;
                break Exit::Lost(format!(
                    "the connection drain task ended unexpectedly ({}); nginx left running for the next nginx-ha to adopt",
                    describe(ended)
                ));
            }
            ended = anycast_ended(&mut daemon.anycast) => {
                // Nothing looks after the announcements any more: withdraw them all.
                anycast::withdraw_everything().await;
                daemon.anycast = None;
                break Exit::Lost(format!(
                    "the anycast task ended unexpectedly ({}); routes withdrawn, nginx left running for the next nginx-ha to adopt",
                    describe(ended)
                ));
            }
            _ = tick(&mut watchdog) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
        }
    };

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Shutdown order: before nginx stops, and both at once, the VIPs are handed over (priority-0
    // advert, VIPs kept until the peer is master) and the anycast routes withdrawn (nginx goes
    // on serving for drain_ms), so clients move elsewhere while this nginx still answers.
    let planned = matches!(exit, Exit::Planned);
    let hand_over = async {
        if let Some(vrrp) = &daemon.vrrp {
            vrrp.shutdown().await;
            info!("VIPs relinquished");
        }
    };
    let withdraw = async {
        match &daemon.anycast {
            Some(anycast) if planned => {
                anycast.withdraw_and_drain().await;
                info!("anycast routes withdrawn and drained");
            }
            // Nobody will look after them until the next nginx-ha: no drain, nginx stays.
            Some(_) => anycast::withdraw_everything().await,
            None => {}
        }
    };
    tokio::join!(hand_over, withdraw);
    if let Exit::Lost(why) = exit {
        // nginx keeps serving: the daemon that systemd starts next adopts it.
        let _ = daemon.supervisor.commands.send(Command::Detach).await;
        let _ = (&mut daemon.supervisor.task).await;
        anyhow::bail!("{why}");
    }
    // The VIPs' connections drain through the new holder while nginx finishes them: its stop
    // (QUIT at once: idle keep-alive connections close) waits for them until the window ends.
    let drain = daemon.drain.as_ref().map(|(handle, _)| handle.clone());
    if let Some(drain) = &drain
        && !drain.status().await.drains.is_empty()
    {
        let window = specs.iter().map(|spec| spec.router.drain).max().unwrap_or_default();
        let _ = daemon.supervisor.commands.send(Command::KeepConnectionsFor(window)).await;
    }
    let _ = daemon.supervisor.commands.send(Command::Shutdown).await;
    let mut requests_open = true;
    let task = &mut daemon.supervisor.task;
    loop {
        tokio::select! {
            _ = &mut *task => break,
            incoming = requests.recv(), if requests_open => match incoming {
                Some((_, reply)) => { let _ = reply.send(Response::error(CommandError::ShuttingDown.to_string())); }
                None => requests_open = false,
            },
        }
    }
    // nginx is gone and its connections with it: the drain's next listing finds none left.
    if let Some(drain) = &drain {
        drain.idle().await;
    }
    daemon.aliases.shutdown().await;
    // The anycast addresses go last, once nginx is stopped.
    if let Some(anycast) = daemon.anycast.take() {
        anycast.shutdown().await;
        if let Err(e) = anycast.task.await {
            error!("the anycast task failed: {e}");
        }
    }
    info!("nginx-ha stopped");
    Ok(())
}

/// Resolves when the VRRP task ends (never, without routers).
async fn vrrp_task(vrrp: &mut Option<VrrpHandle>) -> Result<(), tokio::task::JoinError> {
    match vrrp {
        Some(vrrp) => (&mut vrrp.task).await,
        None => std::future::pending().await,
    }
}

fn describe(ended: Result<(), tokio::task::JoinError>) -> String {
    match ended {
        Ok(()) => "it returned".into(),
        Err(e) if e.is_panic() => "it panicked".into(),
        Err(e) => e.to_string(),
    }
}

impl Daemon {
    async fn request(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        while self.replies.try_join_next().is_some() {}
        match request {
            Request::Status => {
                let _ = reply.send(Response::status(self.status_document().await));
            }
            #[cfg(debug_assertions)]
            Request::Failpoint { name } => {
                let response = match (name.as_str(), &self.vrrp) {
                    ("vrrp_task", Some(vrrp)) => {
                        vrrp.inject_failure().await;
                        Response::ok()
                    }
                    _ => Response::error(format!("no failpoint {name:?} here")),
                };
                let _ = reply.send(response);
            }
            Request::Upgrade => self.upgrade(reply).await,
            Request::UpgradeNginx => {
                let (done, result) = oneshot::channel();
                let _ = self.supervisor.commands.send(Command::UpgradeNginx { reply: done }).await;
                self.replies.spawn(async move {
                    let _ = reply.send(match result.await {
                        Ok(Ok(())) => Response::ok(),
                        Ok(Err(e)) => Response::error(e.to_string()),
                        Err(_) => Response::error(CommandError::ShuttingDown.to_string()),
                    });
                });
            }
            Request::Reload => {
                let (done_tx, done_rx) = oneshot::channel();
                self.reload(done_tx).await;
                self.replies.spawn(async move {
                    let response = match done_rx.await {
                        Ok(Ok(applied)) => Response::applied(applied),
                        Ok(Err(e)) => Response::error(e.to_string()),
                        Err(_) => Response::error(CommandError::ShuttingDown.to_string()),
                    };
                    let _ = reply.send(response);
                });
            }
            request @ (Request::AliasAdd { .. } | Request::AliasDel { .. } | Request::AliasList) => {
                self.replies.spawn(self.aliases.answer(request, reply));
            }
        }
    }

    async fn status_document(&self) -> StatusDocument {
        let vrrp = match &self.vrrp {
            Some(vrrp) => vrrp.status().await,
            None => Vec::new(),
        };
        StatusDocument {
            nginx: self.supervisor.status.borrow().clone(),
            vrrp,
            aliases: self.aliases.status().await,
            anycast: match &self.anycast {
                Some(anycast) => anycast.status().await,
                None => Vec::new(),
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            daemon: DaemonReport {
                pid: std::process::id(),
                started_at_ms: self.started_at_ms,
                upgrades: upgrade::Upgrader::upgrades(),
            },
            drain: match &self.drain {
                Some((drain, _)) => Some(drain.status().await),
                None => None,
            },
        }
    }

    /// Re-executes the binary on disk once it passed its preflight; on any failure the
    /// running daemon goes on untouched. Nothing is relinquished or stopped: nginx stays our
    /// child, and the routers' state record lets the new binary resume MASTER.
    async fn upgrade(&mut self, reply: oneshot::Sender<Response>) {
        match self.upgrader.preflight().await {
            Ok(said) => info!("the new binary passed its preflight ({said}); re-executing in place"),
            Err(e) => {
                error!("{e}");
                let _ = reply.send(Response::error(e.to_string()));
                return;
            }
        }
        let _ = reply.send(Response::ok());
        // The new binary resumes MASTER from the state record: it must be on disk as it is now.
        if let Some(vrrp) = &self.vrrp {
            vrrp.flush_record().await;
        }
        // Let the answer reach the CLI before the sockets close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let error = self.upgrader.exec();
        error!("{error}; the running daemon goes on");
    }

    /// Re-reads nginx-ha's own config and applies what changed, or rejects it all if a key
    /// needs a restart; then tests and reloads nginx. Answers with the nginx-ha keys applied.
    async fn reload(&mut self, done: oneshot::Sender<Result<Vec<String>, ReloadError>>) {
        let commands = self.supervisor.commands.clone();
        let (reply, finished) = oneshot::channel();
        let checked = Config::load(&self.config_path)
            .map_err(|errors| format!("nginx-ha config rejected, the running config stays:\n{errors}"))
            .and_then(|new| Ok((self.config.reload_changes(&new).map_err(|e| e.to_string())?, new)));
        let applied = match checked {
            Ok((applied, new_config)) => {
                if !applied.is_empty() {
                    info!(keys = %applied.join(", "), "applying changed nginx-ha settings");
                    let live = SupervisorConfig::from_config(&new_config).live;
                    let _ = commands.send(Command::Reconfigure(live)).await;
                    if let Some(anycast) = &self.anycast {
                        anycast.reconfigure(AnycastSpec::from_config(&new_config)).await;
                    }
                }
                self.config = new_config;
                self.metrics_settings.send_replace(StatusSettings::from_config(&self.config.health));
                self.aliases.reconfigure(AliasSettings::from_config(&self.config)).await;
                let _ = commands.send(Command::Reload { reply }).await;
                applied
            }
            Err(error) => {
                // Through the supervisor, which shows it in the status document's config_error.
                let _ = commands.send(Command::RejectOwnConfig { error, reply }).await;
                Vec::new()
            }
        };
        self.replies.spawn(answer(finished, done, applied));
    }

    /// READY=1 once nginx has started (or could not), so `systemctl start` returns then.
    fn notify_state(&mut self) {
        let status = self.supervisor.status.borrow().clone();
        let text = format!("nginx {}{}", status.state, if status.healthy { ", healthy" } else { "" });
        let mut states = vec![sd_notify::NotifyState::Status(&text)];
        if !self.notified_ready && status.state != NginxState::Starting {
            self.notified_ready = true;
            states.push(sd_notify::NotifyState::Ready);
        }
        let _ = sd_notify::notify(&states);
    }
}

/// Why `nginx-ha reload` did not apply everything it was asked to.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error("{0}")]
    Refused(CommandError),
    /// nginx's part failed; nginx-ha's own changed settings do not depend on it.
    #[error("{error}\n(the changed nginx-ha settings were applied all the same: {})", applied.join(", "))]
    NginxRefused { error: CommandError, applied: Vec<String> },
}

/// Passes the supervisor's answer on.
async fn answer(
    finished: oneshot::Receiver<Result<(), CommandError>>,
    done: oneshot::Sender<Result<Vec<String>, ReloadError>>,
    applied: Vec<String>,
) {
    let result = match finished.await {
        Ok(Ok(())) => Ok(applied),
        Ok(Err(error)) if applied.is_empty() => Err(ReloadError::Refused(error)),
        Ok(Err(error)) => Err(ReloadError::NginxRefused { error, applied }),
        Err(_) => Err(ReloadError::Refused(CommandError::ShuttingDown)),
    };
    let _ = done.send(result);
}

/// Half the systemd watchdog timeout, when systemd asked for pings.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero()).map(|timeout| timeout / 2)
}

/// Completes when the drain task ends (it only should once the daemon drops its handle).
async fn drain_ended(
    drain: &mut Option<(DrainHandle, tokio::task::JoinHandle<()>)>,
) -> Result<(), tokio::task::JoinError> {
    match drain {
        Some((_, task)) => task.await,
        None => std::future::pending().await,
    }
}

/// Completes when the anycast task ends (it only should after its shutdown).
async fn anycast_ended(anycast: &mut Option<AnycastHandle>) -> Result<(), tokio::task::JoinError> {
    match anycast {
        Some(anycast) => (&mut anycast.task).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `[daemon] status_group` resolved to its gid: a name that is no group stops the start.
fn access_policy(config: &Config) -> anyhow::Result<crate::control::access::AccessPolicy> {
    let Some(name) = &config.daemon.status_group else { return Ok(Default::default()) };
    let group = nix::unistd::Group::from_name(name)
        .with_context(|| format!("cannot look up [daemon] status_group `{name}`"))?
        .with_context(|| {
            format!("[daemon] status_group `{name}` is not a group on this system: create it (groupadd {name}) or remove the key")
        })?;
    Ok(crate::control::access::AccessPolicy { status_group: Some((name.clone(), group.gid.as_raw())) })
}
