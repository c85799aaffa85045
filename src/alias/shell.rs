//! The alias task: feeds the [`Reconciler`] with netlink link and address events (no polling),
//! carries out its adds (after an ARP probe) and removals through `net`, and answers the
//! daemon's commands (`alias add`/`del`/`list`, reload, status). It owns the store and holds
//! its lock while it runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::core::{
    self, Action, AddOutcome, Declared, NewAlias, NotApplied, Reconciler, Rejected, Settled, Source, Vip,
};
use super::{Alias, AliasError, Blocked, store};
use crate::config::Config;
use crate::control::status::AliasReport;
use crate::net::{self, ALIAS_PROTO, Net, NetError, NetEvent, ProbeOutcome};

/// At start, how long the daemon waits for the aliases to be added before it starts nginx
/// (which may listen on them): the ARP probes take about a second, IPv6 DAD a little more.
const INITIAL_WAIT: Duration = Duration::from_secs(5);
/// How long the task waits for a CLI that holds the store's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// What the alias task needs from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasSettings {
    pub config_aliases: Vec<Alias>,
    pub vips: Vec<Vip>,
    pub state_dir: PathBuf,
}

impl AliasSettings {
    /// Expects a validated config.
    pub fn from_config(config: &Config) -> AliasSettings {
        AliasSettings {
            config_aliases: super::config_aliases(config),
            vips: super::config_vips(config),
            state_dir: config.daemon.state_dir.clone(),
        }
    }
}

pub enum AliasCommand {
    /// `nginx-ha alias add`: answered once the alias is present (or waits for its interface),
    /// or with the reason it was refused; it is stored only if it was not refused.
    Add {
        alias: Alias,
        reply: oneshot::Sender<Result<AliasReport, AliasError>>,
    },
    /// `nginx-ha alias del` (the label is ignored): removed now and from the store.
    Del {
        alias: Alias,
        reply: oneshot::Sender<Result<String, AliasError>>,
    },
    List(oneshot::Sender<Vec<AliasReport>>),
    /// `nginx-ha reload`: the new `[[alias]]` tables (and VIPs).
    Reconfigure(AliasSettings),
    /// Ends the task; the aliases stay on their interfaces.
    Shutdown,
}

/// The running alias task. The daemon owns it: `task` ends only on [`AliasHandle::shutdown`]
/// (or a bug), so the daemon selects on it.
pub struct AliasHandle {
    pub task: JoinHandle<()>,
    pub commands: mpsc::Sender<AliasCommand>,
}

impl AliasHandle {
    /// One report per declared alias; empty once the task is gone.
    pub async fn status(&self) -> Vec<AliasReport> {
        list(&self.commands).await
    }

    pub async fn add(&self, alias: Alias) -> Result<AliasReport, AliasError> {
        add_via(&self.commands, alias).await
    }

    pub async fn del(&self, alias: Alias) -> Result<String, AliasError> {
        del_via(&self.commands, alias).await
    }

    pub async fn reconfigure(&self, settings: AliasSettings) {
        let _ = self.commands.send(AliasCommand::Reconfigure(settings)).await;
    }

    /// Stops the task and waits for it; the aliases stay (they are static addresses).
    pub async fn shutdown(&mut self) {
        let _ = self.commands.send(AliasCommand::Shutdown).await;
        let _ = (&mut self.task).await;
    }
}

async fn list(commands: &mpsc::Sender<AliasCommand>) -> Vec<AliasReport> {
    let (reply, answer) = oneshot::channel();
    if commands.send(AliasCommand::List(reply)).await.is_err() {
        return Vec::new();
    }
    answer.await.unwrap_or_default()
}

async fn add_via(commands: &mpsc::Sender<AliasCommand>, alias: Alias) -> Result<AliasReport, AliasError> {
    let (reply, answer) = oneshot::channel();
    commands.send(AliasCommand::Add { alias, reply }).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn del_via(commands: &mpsc::Sender<AliasCommand>, alias: Alias) -> Result<String, AliasError> {
    let (reply, answer) = oneshot::channel();
    commands.send(AliasCommand::Del { alias, reply }).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

fn gone() -> AliasError {
    AliasError::TaskGone
}

/// Starts the alias task and returns once the declared aliases are in place (or after
/// [`INITIAL_WAIT`]), so that nginx started next can listen on them.
pub async fn spawn(settings: AliasSettings) -> AliasHandle {
    let (commands, receiver) = mpsc::channel(16);
    let (ready_tx, ready) = oneshot::channel();
    let task = tokio::spawn(run(settings, receiver, ready_tx));
    if tokio::time::timeout(INITIAL_WAIT, ready).await.is_err() {
        warn!("the aliases are not all in place after {INITIAL_WAIT:?}; starting nginx all the same");
    }
    AliasHandle { task, commands }
}

/// The store as the task holds it.
struct Stored {
    aliases: Vec<Alias>,
    /// Why the store cannot be changed (its directory cannot be created, its lock taken).
    unavailable: Option<String>,
    /// Held for the task's life.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

struct PendingAdd {
    alias: Alias,
    reply: oneshot::Sender<Result<AliasReport, AliasError>>,
}

struct Shell {
    net: Net,
    core: Reconciler,
    settings: AliasSettings,
    stored: Stored,
    /// Aliases still readable in a corrupt store that was moved aside: reported, not applied.
    salvaged: Vec<Rejected>,
    adds: FuturesUnordered<BoxFuture<'static, (IpNet, AddOutcome)>>,
    pending: Vec<PendingAdd>,
}

async fn run(settings: AliasSettings, mut commands: mpsc::Receiver<AliasCommand>, ready: oneshot::Sender<()>) {
    let (stored, salvaged) = open_store(&settings.state_dir).await;
    let net = match Net::new().await {
        Ok(net) => net,
        Err(e) => {
            error!("aliases cannot be managed: {e}");
            let _ = ready.send(());
            return refuse_all(commands, Arc::new(e)).await;
        }
    };
    let mut shell = Shell {
        net,
        core: Reconciler::new(),
        settings,
        stored,
        salvaged,
        adds: FuturesUnordered::new(),
        pending: Vec::new(),
    };
    // Subscribed before the snapshot is read: nothing that happens in between is missed.
    let mut events = subscribe().await;
    shell.redeclare().await;
    shell.resync().await;
    let mut ready = Some(ready);
    loop {
        if !shell.core.busy()
            && let Some(ready) = ready.take()
        {
            let _ = ready.send(());
        }
        let deadline = shell.core.next_deadline().map(Instant::from_std);
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(AliasCommand::Shutdown) => break,
                Some(command) => shell.command(command).await,
            },
            event = events.next() => match event {
                Some(event) => shell.event(event).await,
                None => {
                    // Notifications were lost: subscribe again and re-read everything.
                    events = subscribe().await;
                    shell.resync().await;
                }
            },
            Some((address, outcome)) = shell.adds.next() => {
                log_outcome(address, &outcome);
                let actions = shell.core.add_finished(address, outcome, Instant::now().into_std());
                shell.execute(actions).await;
            }
            () = sleep_until(deadline) => {
                let actions = shell.core.tick(Instant::now().into_std());
                shell.execute(actions).await;
            }
        }
        shell.settle_pending().await;
    }
    for pending in shell.pending.drain(..) {
        let _ = pending.reply.send(Err(gone()));
    }
    info!("alias task stopped; the aliases stay on their interfaces");
}

async fn refuse_all(mut commands: mpsc::Receiver<AliasCommand>, error: Arc<NetError>) {
    let refusal = || AliasError::Netlink(error.clone());
    while let Some(command) = commands.recv().await {
        match command {
            AliasCommand::Add { reply, .. } => drop(reply.send(Err(refusal()))),
            AliasCommand::Del { reply, .. } => drop(reply.send(Err(refusal()))),
            AliasCommand::List(reply) => drop(reply.send(Vec::new())),
            AliasCommand::Reconfigure(_) => {}
            AliasCommand::Shutdown => return,
        }
    }
}

async fn subscribe() -> net::NetEvents {
    loop {
        match net::events() {
            Ok(events) => return events,
            Err(e) => {
                error!("cannot subscribe to netlink events for the aliases: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Takes the lock and reads the store. A corrupt store is moved aside and what it still
/// says is reported as not applied; the daemon starts all the same (nginx keeps serving, the
/// config's aliases are applied).
async fn open_store(dir: &std::path::Path) -> (Stored, Vec<Rejected>) {
    let deadline = Instant::now() + LOCK_WAIT;
    let lock = loop {
        match store::lock(dir, false) {
            Err(store::StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    let lock = match lock {
        Ok(lock) => lock,
        Err(e) => {
            warn!("{e}; `nginx-ha alias add` and `del` will be refused");
            let aliases = store::read(dir).unwrap_or_default();
            return (Stored { aliases, unavailable: Some(e.to_string()), _lock: None }, Vec::new());
        }
    };
    let stored = |aliases, unavailable| Stored { aliases, unavailable, _lock: Some(lock) };
    match store::read(dir) {
        Ok(aliases) => {
            if !aliases.is_empty() {
                info!(count = aliases.len(), store = %store::path(dir).display(), "aliases from the store");
            }
            (stored(aliases, None), Vec::new())
        }
        Err(corrupt @ store::StoreError::Corrupt { .. }) => {
            let bytes = std::fs::read(store::path(dir)).unwrap_or_default();
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match store::set_aside(dir, now) {
                Ok(aside) => {
                    let salvaged = store::salvage(&bytes);
                    error!(
                        "{corrupt}. It was moved to {}; its aliases are NOT applied (the config's are): check them with `nginx-ha alias list` and re-add each with `nginx-ha alias add`, then delete {}",
                        aside.display(),
                        aside.display()
                    );
                    let reason = NotApplied::InCorruptStore { aside: aside.clone() };
                    let rejected = salvaged
                        .into_iter()
                        .map(|alias| Rejected {
                            declared: Declared { alias, source: Source::Cli },
                            reason: reason.clone(),
                        })
                        .collect();
                    (stored(Vec::new(), None), rejected)
                }
                Err(e) => {
                    error!("{corrupt}; moving it aside failed: {e}. Its aliases are NOT applied");
                    (stored(Vec::new(), Some(format!("{corrupt}; {e}"))), Vec::new())
                }
            }
        }
        Err(e) => {
            error!("{e}; the stored aliases are NOT applied");
            (stored(Vec::new(), Some(e.to_string())), Vec::new())
        }
    }
}

impl Shell {
    async fn command(&mut self, command: AliasCommand) {
        match command {
            AliasCommand::List(reply) => drop(reply.send(self.core.reports())),
            AliasCommand::Reconfigure(settings) => {
                if settings != self.settings {
                    info!(aliases = settings.config_aliases.len(), "applying the config's [[alias]] tables");
                    self.settings = settings;
                    self.redeclare().await;
                }
            }
            AliasCommand::Add { alias, reply } => self.add(alias, reply).await,
            AliasCommand::Del { alias, reply } => {
                let answer = self.del(&alias).await;
                let _ = reply.send(answer);
            }
            AliasCommand::Shutdown => {}
        }
    }

    async fn add(&mut self, alias: Alias, reply: oneshot::Sender<Result<AliasReport, AliasError>>) {
        if let Some(reason) = &self.stored.unavailable {
            let _ = reply.send(Err(AliasError::StoreUnavailable(reason.clone())));
            return;
        }
        match core::check_new(&alias, &self.settings.config_aliases, &self.stored.aliases, &self.settings.vips) {
            Err(reason) => drop(reply.send(Err(reason))),
            Ok(NewAlias::AlreadyDeclared) => drop(reply.send(Ok(self.report_of(&alias)))),
            Ok(NewAlias::New) => {
                self.salvaged.retain(|r| r.declared.alias.address.addr() != alias.address.addr());
                self.stored.aliases.push(alias.clone());
                self.redeclare().await;
                self.pending.push(PendingAdd { alias, reply });
            }
        }
    }

    async fn del(&mut self, alias: &Alias) -> Result<String, AliasError> {
        if let Some(reason) = &self.stored.unavailable {
            return Err(AliasError::StoreUnavailable(reason.clone()));
        }
        let ip = alias.address.addr();
        let Some(stored) =
            self.stored.aliases.iter().find(|a| a.address.addr() == ip && a.interface == alias.interface).cloned()
        else {
            if let Some(i) = self.salvaged.iter().position(|r| r.declared.alias.address.addr() == ip) {
                self.salvaged.remove(i);
                self.redeclare().await;
                return Ok(format!("{ip} forgotten: it was only in a corrupt store, and was not applied"));
            }
            return Err(unknown(alias, &self.settings.config_aliases, &self.stored.aliases));
        };
        if stored.address != alias.address {
            return Err(AliasError::OtherPrefix { stored, given: alias.address });
        }
        let remaining: Vec<Alias> = self.stored.aliases.iter().filter(|a| **a != stored).cloned().collect();
        store::write(&self.settings.state_dir, &remaining).map_err(AliasError::Unchanged)?;
        self.stored.aliases = remaining;
        for pending in self.pending.iter_mut().filter(|p| p.alias == stored) {
            let (dead, _) = oneshot::channel();
            let _ = std::mem::replace(&mut pending.reply, dead).send(Err(AliasError::DeletedMeanwhile));
        }
        self.pending.retain(|p| p.alias != stored);
        self.redeclare().await;
        info!(alias = %stored, "alias deleted");
        Ok(format!("{stored}: removed and deleted from the store"))
    }

    /// Answers the `alias add`s whose alias has settled: stored if it is in place (or waits
    /// for its interface), refused and forgotten if it was blocked.
    async fn settle_pending(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let settled = self.core.settled(&self.pending[i].alias);
            if settled == Settled::Pending {
                i += 1;
                continue;
            }
            let PendingAdd { alias, reply } = self.pending.remove(i);
            let refused = match settled {
                Settled::Blocked(reason) => Some(AliasError::NotAdded { alias: alias.clone(), reason }),
                Settled::Unknown => Some(AliasError::Dropped(alias.clone())),
                _ => match store::write(&self.settings.state_dir, &self.stored.aliases) {
                    Ok(()) => None,
                    Err(source) => Some(AliasError::NotStored { alias: Box::new(alias.clone()), source }),
                },
            };
            match refused {
                None => {
                    info!(alias = %alias, "alias added and stored");
                    let _ = reply.send(Ok(self.report_of(&alias)));
                }
                Some(reason) => {
                    warn!("{reason}");
                    self.stored.aliases.retain(|a| *a != alias);
                    self.redeclare().await;
                    let _ = reply.send(Err(reason));
                }
            }
        }
    }

    fn report_of(&self, alias: &Alias) -> AliasReport {
        let address = alias.address.to_string();
        self.core.reports().into_iter().find(|r| r.address == address && r.interface == alias.interface).unwrap_or_else(
            || AliasReport {
                address,
                interface: alias.interface.clone(),
                label: alias.label.clone(),
                present: false,
                source: None,
                problem: None,
            },
        )
    }

    /// The declared set from the config, the store and the VIPs, given to the core.
    async fn redeclare(&mut self) {
        let (declared, mut rejected) =
            core::merge(&self.settings.config_aliases, &self.stored.aliases, &self.settings.vips);
        for r in &rejected {
            warn!(alias = %r.declared.alias, "alias not applied: {}", r.reason);
        }
        rejected.extend(self.salvaged.iter().cloned());
        let actions = self.core.set_declared(declared, rejected, Instant::now().into_std());
        self.execute(actions).await;
    }

    /// Re-reads every link and address (at start, and after lost notifications).
    async fn resync(&mut self) {
        let (links, addresses) = match (self.net.links().await, self.net.all_addresses().await) {
            (Ok(links), Ok(addresses)) => (links, addresses),
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot read the interfaces and addresses for the aliases: {e}");
                return;
            }
        };
        let links = links.into_iter().map(|l| (l.name, l.index, l.up));
        let actions = self.core.snapshot(links, addresses, Instant::now().into_std());
        self.execute(actions).await;
    }

    async fn event(&mut self, event: NetEvent) {
        let now = Instant::now().into_std();
        let actions = match event {
            NetEvent::LinkChanged { name, .. } => match self.net.link(&name).await {
                Ok(link) => {
                    debug!(interface = %link.name, index = link.index, up = link.up, "link for the aliases");
                    self.core.link(&link.name, link.index, link.up, now)
                }
                Err(NetError::NoSuchLink(_)) => self.core.link_gone(&name, now),
                Err(e) => {
                    warn!("{e}");
                    Vec::new()
                }
            },
            NetEvent::AddressAdded(info) => self.core.address_added(info, now),
            NetEvent::AddressRemoved(info) => {
                let actions = self.core.address_removed(&info, now);
                if actions
                    .iter()
                    .any(|a| matches!(a, Action::Add { address, .. } if address.addr() == info.address.addr()))
                {
                    warn!(address = %info.address, "an alias was removed behind our back; adding it again");
                }
                actions
            }
            // Aliases own no routes (the anycast task subscribes to those).
            NetEvent::RouteAdded(_) | NetEvent::RouteRemoved(_) => Vec::new(),
        };
        self.execute(actions).await;
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Remove { address, ifindex } => match self.net.del_address(ifindex, address).await {
                    Ok(_) => info!(%address, ifindex, "alias removed"),
                    Err(e) => error!("{e}"),
                },
                Action::Add { address, interface, ifindex, label, probe } => {
                    let net = self.net.clone();
                    self.adds.push(
                        async move {
                            let outcome = add(&net, address, &interface, ifindex, label.as_deref(), probe).await;
                            (address, outcome)
                        }
                        .boxed(),
                    );
                }
            }
        }
    }
}

/// Probes (IPv4 with carrier), adds, and announces one alias.
async fn add(net: &Net, address: IpNet, interface: &str, ifindex: u32, label: Option<&str>, probe: bool) -> AddOutcome {
    let link = match net.link(interface).await {
        Ok(link) if link.index == ifindex => link,
        Ok(_) | Err(NetError::NoSuchLink(_)) => return AddOutcome::NoLink,
        Err(e) => return AddOutcome::Blocked(Blocked::Failed(e.to_string())),
    };
    if probe && let IpAddr::V4(ip) = address.addr() {
        match net::probe_ipv4(&link, ip).await {
            Ok(ProbeOutcome::Free) => {}
            Ok(ProbeOutcome::Taken { mac }) => {
                return AddOutcome::Blocked(Blocked::ArpAnswered { mac, interface: interface.to_owned(), ip });
            }
            Err(e) => return AddOutcome::Blocked(Blocked::Failed(e.to_string())),
        }
    }
    match net.add_address_with(ifindex, address, label, ALIAS_PROTO, true).await {
        Ok(_) => {
            if probe && let Err(e) = net::announce(&link, &[address.addr()]).await {
                debug!("{e}");
            }
            AddOutcome::Added
        }
        Err(NetError::NoSuchIndex(_) | NetError::NoSuchLink(_)) => AddOutcome::NoLink,
        Err(e) => AddOutcome::Blocked(Blocked::Failed(e.to_string())),
    }
}

fn log_outcome(address: IpNet, outcome: &AddOutcome) {
    match outcome {
        AddOutcome::Added => info!(%address, "alias added"),
        AddOutcome::Blocked(reason) => error!(%address, "alias not added: {reason}"),
        AddOutcome::NoLink => info!(%address, "alias waits for its interface"),
    }
}

/// Why `alias del` of `alias` is refused: declared in the config, or not at all.
pub fn unknown(alias: &Alias, config: &[Alias], stored: &[Alias]) -> AliasError {
    let ip = alias.address.addr();
    if let Some(declared) = config.iter().find(|a| a.address.addr() == ip) {
        return AliasError::DeclaredInConfig(declared.clone());
    }
    if let Some(other) = stored.iter().find(|a| a.address.addr() == ip) {
        return AliasError::OnOtherInterface { other: other.clone(), interface: alias.interface.clone() };
    }
    AliasError::NotDeclared { address: alias.address, interface: alias.interface.clone() }
}

impl AliasHandle {
    /// The answer to an `alias_*` control request, for the caller to run as a task of its own:
    /// an add waits for its probe, and the daemon's loop must go on meanwhile.
    pub fn answer(
        &self,
        request: crate::control::Request,
        reply: oneshot::Sender<crate::control::Response>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let commands = self.commands.clone();
        async move {
            // A refusal crosses the control socket as its text.
            let response =
                respond(&commands, request).await.unwrap_or_else(|e| crate::control::Response::error(e.to_string()));
            let _ = reply.send(response);
        }
    }
}

async fn respond(
    commands: &mpsc::Sender<AliasCommand>,
    request: crate::control::Request,
) -> Result<crate::control::Response, AliasError> {
    use crate::control::{Request, Response};
    Ok(match request {
        Request::AliasAdd { address, interface, label } => {
            let report = add_via(commands, Alias::parse(&address, &interface, label.as_deref())?).await?;
            Response { aliases: vec![report], ..Response::ok() }
        }
        Request::AliasDel { address, interface } => {
            del_via(commands, Alias::parse(&address, &interface, None)?).await?;
            Response::ok()
        }
        Request::AliasList => Response { aliases: list(commands).await, ..Response::ok() },
        other => Response::error(format!("not an alias request: {other:?}")),
    })
}
