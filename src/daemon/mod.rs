//! `nginx-ha run`: wiring, signals, sd_notify, and the shutdown order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::anycast::{self, AnycastHandle, AnycastSpec};
use crate::config::Config;
use crate::control::server::{ControlServer, Incoming};
use crate::control::status::StatusDocument;
use crate::control::{Request, Response};
use crate::nginx::policy::NginxState;
use crate::nginx::supervisor::{self, Command, SupervisorConfig, SupervisorHandle};
use crate::vrrp::shell::{self as vrrp, RouterSpec, VrrpHandle};

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    supervisor: SupervisorHandle,
    vrrp: Option<VrrpHandle>,
    anycast: Option<AnycastHandle>,
    notified_ready: bool,
}

/// Runs until SIGTERM/SIGINT; returns once nginx is stopped.
pub async fn run(config_path: &Path, config: Config) -> anyhow::Result<()> {
    // Orphans of a dead nginx master come to us, so we can kill and reap them (they would hold
    // the listen sockets and block the restart).
    nix::sys::prctl::set_child_subreaper(true).context("cannot become the child subreaper")?;

    let (requests_tx, mut requests) = mpsc::channel::<Incoming>(16);
    if let Some(listen) = &config.daemon.metrics_listen {
        let address = listen.parse().context("[daemon] metrics_listen was validated")?;
        crate::control::metrics::start(address, requests_tx.clone()).await?;
        info!(%address, "serving Prometheus metrics");
    }
    let _control = ControlServer::start(&config.daemon.control_socket, requests_tx).await?;
    info!(socket = %config.daemon.control_socket.display(), config = %config_path.display(), "nginx-ha started");

    let supervisor = supervisor::spawn(SupervisorConfig::from_config(&config));
    // The routers follow nginx's health; they stay in INIT until nginx first serves.
    let vrrp = if config.vrrp.is_empty() {
        None
    } else {
        match vrrp::spawn(RouterSpec::from_config(&config), supervisor.health.clone()).await {
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
    let mut daemon =
        Daemon { config_path: config_path.to_path_buf(), config, supervisor, vrrp, anycast, notified_ready: false };

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut watchdog = watchdog_interval().map(tokio::time::interval);
    let mut status = daemon.supervisor.status.clone();
    let mut supervisor_lost = false;
    let mut anycast_lost = false;

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading");
                let (reply, _) = oneshot::channel();
                daemon.reload(reply).await;
            }
            Some((request, reply)) = requests.recv() => daemon.request(request, reply).await,
            changed = status.changed() => {
                if changed.is_err() {
                    supervisor_lost = true;
                    break;
                }
                daemon.notify_state();
            }
            _ = anycast_ended(&mut daemon.anycast) => {
                // The addresses and routes are no longer looked after: stop, and let systemd restart us.
                tracing::error!("the anycast task ended unexpectedly");
                anycast::withdraw_everything().await;
                daemon.anycast = None;
                anycast_lost = true;
                break;
            }
            _ = tick(&mut watchdog) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
        }
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Anycast first: the routes are withdrawn and nginx keeps serving for drain_ms, so that
    // the routers have moved new connections elsewhere before it stops.
    if let Some(anycast) = &daemon.anycast
        && !supervisor_lost
    {
        anycast.withdraw_and_drain().await;
        info!("anycast routes withdrawn and drained");
    }
    // Shutdown order: VIPs are relinquished (priority-0 advert, VIPs removed) before nginx
    // stops, so clients move to the peer while this nginx still answers.
    if let Some(vrrp) = &daemon.vrrp {
        vrrp.shutdown().await;
        info!("VIPs relinquished");
    }
    let _ = daemon.supervisor.commands.send(Command::Shutdown).await;
    let mut requests_open = true;
    let task = &mut daemon.supervisor.task;
    loop {
        tokio::select! {
            _ = &mut *task => break,
            incoming = requests.recv(), if requests_open => match incoming {
                Some((_, reply)) => { let _ = reply.send(Response::error("nginx-ha is shutting down")); }
                None => requests_open = false,
            },
        }
    }
    // The anycast addresses go last, once nginx is stopped.
    if let Some(anycast) = daemon.anycast.take() {
        anycast.shutdown().await;
        if let Err(e) = anycast.task.await {
            tracing::error!("the anycast task failed: {e}");
        }
    }
    if anycast_lost {
        anyhow::bail!("the anycast task stopped unexpectedly");
    }
    if supervisor_lost {
        // A non-zero exit, so that systemd's Restart=on-failure brings us back.
        anyhow::bail!("the nginx supervisor stopped unexpectedly; VIPs were relinquished");
    }
    info!("nginx-ha stopped");
    Ok(())
}

impl Daemon {
    async fn request(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        match request {
            Request::Status => {
                let _ = reply.send(Response::status(self.status_document().await));
            }
            Request::Reload => {
                let (done_tx, done_rx) = oneshot::channel();
                self.reload(done_tx).await;
                // Answer from a task: a reload can take a while and the loop must go on.
                tokio::spawn(async move {
                    let response = match done_rx.await {
                        Ok(Ok(applied)) => Response::applied(applied),
                        Ok(Err(e)) => Response::error(e),
                        Err(_) => Response::error("nginx-ha is shutting down"),
                    };
                    let _ = reply.send(response);
                });
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
            aliases: Vec::new(),
            anycast: match &self.anycast {
                Some(anycast) => anycast.status().await,
                None => Vec::new(),
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Re-reads nginx-ha's own config and applies what changed, or rejects it all if a key
    /// needs a restart; then tests and reloads nginx. Answers with the nginx-ha keys applied.
    async fn reload(&mut self, done: oneshot::Sender<Result<Vec<String>, String>>) {
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
                let _ = commands.send(Command::Reload { reply }).await;
                applied
            }
            Err(error) => {
                // Through the supervisor, which shows it in the status document's config_error.
                let _ = commands.send(Command::RejectOwnConfig { error, reply }).await;
                Vec::new()
            }
        };
        tokio::spawn(answer(finished, done, applied));
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

/// Passes the supervisor's answer on; a rejected nginx reload says that nginx-ha's own changed
/// settings were applied all the same (they do not depend on the nginx config).
async fn answer(
    finished: oneshot::Receiver<Result<(), String>>,
    done: oneshot::Sender<Result<Vec<String>, String>>,
    applied: Vec<String>,
) {
    let result = match finished.await {
        Ok(Ok(())) => Ok(applied),
        Ok(Err(e)) if applied.is_empty() => Err(e),
        Ok(Err(e)) => {
            Err(format!("{e}\n(the changed nginx-ha settings were applied all the same: {})", applied.join(", ")))
        }
        Err(_) => Err("nginx-ha is shutting down".to_string()),
    };
    let _ = done.send(result);
}

/// Half the systemd watchdog timeout, when systemd asked for pings.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|timeout| !timeout.is_zero()).map(|timeout| timeout / 2)
}

/// Completes when the anycast task ends (it only should after its shutdown).
async fn anycast_ended(anycast: &mut Option<AnycastHandle>) {
    match anycast {
        Some(anycast) => {
            let _ = (&mut anycast.task).await;
        }
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
