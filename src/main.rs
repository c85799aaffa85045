//! The `nginx-ha` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use nginx_ha::config::{Config, DEFAULT_CONFIG_PATH};
use nginx_ha::control::client::{self, ClientError};
use nginx_ha::control::{Request, status};

#[derive(Parser)]
#[command(
    name = "nginx-ha",
    version,
    about = "Keeps an nginx pair highly available: supervises nginx, runs VRRP, keeps addresses"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// The nginx-ha config file
    #[arg(short = 'c', long = "config", value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    path: PathBuf,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the daemon in the foreground (under systemd, or in a terminal)
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log at debug level (RUST_LOG overrides)
        #[arg(short, long)]
        verbose: bool,
        /// Load and check the config as at start, then exit (what `upgrade` runs first)
        #[arg(long, hide = true)]
        preflight: bool,
    },
    /// Validate the config file and run `nginx -t` on the nginx config it names
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Ask the running daemon for its status (exit 3 if no daemon answers)
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// The status document as JSON, for scripts
        #[arg(long)]
        json: bool,
    },
    /// Re-read the config and reload nginx (validated first); waits until applied or rejected
    Reload {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Re-execute the running daemon's binary from disk in place (same pid): VIPs, VRRP states
    /// and nginx stay; the old daemon keeps running if the new binary cannot start
    Upgrade {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// nginx's live binary upgrade to the binary now at [nginx] binary; rolled back if it does not serve
    UpgradeNginx {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Static addresses (ifconfig-style aliases) kept across restarts and reboots
    Alias {
        #[command(subcommand)]
        command: AliasCommand,
    },
    /// Convert a keepalived.conf to an nginx-ha.toml on stdout; warnings (file:line) on stderr
    ImportKeepalived {
        /// The keepalived config, e.g. /etc/keepalived/keepalived.conf (includes are followed)
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AliasCommand {
    /// Add a static address now and keep it across restarts and reboots
    Add {
        /// ADDR/LEN, e.g. 198.18.0.107/24 (a bare address is /32 or /128)
        address: String,
        /// The interface, e.g. eth0
        #[arg(long, value_name = "IF")]
        dev: String,
        /// The IPv4 label, which starts with the interface name, e.g. eth0:1
        #[arg(long, value_name = "L")]
        label: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove a static address now and from the store
    Del {
        address: String,
        #[arg(long, value_name = "IF")]
        dev: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The declared aliases and whether each is on its interface
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// One malloc arena for every thread (glibc gives each thread that allocates its own, up to 8 per
/// core, each holding on to its freed memory): the daemon allocates little, and never in a hot
/// path, so contention is no cost while each arena is resident memory (BENCHMARKS.md,
/// "Metrics"). Before any thread exists; `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Exit status when no daemon answers (`status`), as in the interface contract.
const EXIT_NO_DAEMON: u8 = 3;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nginx-ha: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Commands) -> ExitCode {
    match command {
        Commands::Run { config, verbose, preflight } => run(&config.path, verbose, preflight).await,
        Commands::Check { config } => check(&config.path).await,
        Commands::Status { config, json } => status_command(&config.path, json).await,
        Commands::Reload { config } => reload(&config.path).await,
        Commands::Upgrade { config } => upgrade(&config.path).await,
        Commands::UpgradeNginx { config } => upgrade_nginx(&config.path).await,
        Commands::ImportKeepalived { file } => import_keepalived(&file),
        Commands::Alias { command } => alias(command).await,
    }
}

fn import_keepalived(file: &Path) -> ExitCode {
    match nginx_ha::import::import(file, &mut nginx_ha::import::FsLoader) {
        Ok(conversion) => {
            for diagnostic in &conversion.diagnostics {
                eprintln!("{diagnostic}");
            }
            print!("{}", conversion.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nginx-ha: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn alias(command: AliasCommand) -> ExitCode {
    use nginx_ha::alias::cli;
    let outcome = match command {
        AliasCommand::Add { address, dev, label, config } => {
            cli::add(&config.path, &address, &dev, label.as_deref()).await
        }
        AliasCommand::Del { address, dev, config } => cli::del(&config.path, &address, &dev).await,
        AliasCommand::List { json, config } => cli::list(&config.path, json).await,
    };
    match outcome {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("nginx-ha: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

async fn run(path: &Path, verbose: bool, preflight: bool) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if preflight {
        println!("nginx-ha {}: {} ok", env!("CARGO_PKG_VERSION"), path.display());
        return ExitCode::SUCCESS;
    }
    nginx_ha::logging::init(verbose);
    match nginx_ha::daemon::run(path, config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nginx-ha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("{}: ok", path.display());
    warn_about_missing_interfaces(&config).await;
    let binary = config.nginx.binary_path();
    match nginx_ha::nginx::conf::test(&binary, &config.nginx.config).await {
        Ok(()) => {
            println!("{}: nginx -t ok", config.nginx.config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: nginx -t failed:\n{e}", config.nginx.config.display());
            ExitCode::FAILURE
        }
    }
}

/// Interfaces may legitimately appear after nginx-ha starts (the router waits for them), so a
/// missing one is a warning on this host, not an error in the file.
async fn warn_about_missing_interfaces(config: &Config) {
    let routers = config.vrrp.iter().flat_map(|r| std::iter::once(&r.interface).chain(&r.track_interfaces));
    let mut names: Vec<&String> = routers.chain(config.alias.iter().map(|a| &a.interface)).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return;
    }
    let Ok(net) = nginx_ha::net::Net::new().await else { return };
    for name in names {
        if net.link(name).await.is_err() {
            eprintln!("warning: interface {name} does not exist on this host (yet); routers on it wait for it");
        }
    }
}

fn socket_of(path: &Path) -> PathBuf {
    nginx_ha::config::control_socket_of(path)
}

async fn status_command(path: &Path, json: bool) -> ExitCode {
    let socket = socket_of(path);
    match client::request(&socket, &Request::Status, Duration::from_secs(5)).await {
        Ok(response) => {
            let Some(document) = response.status else {
                eprintln!(
                    "nginx-ha: the daemon answered without a status document: {}",
                    response.error.unwrap_or_default()
                );
                return ExitCode::FAILURE;
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
            } else {
                print!("{}", status::render_table(&document));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nginx-ha: {e}");
            ExitCode::from(EXIT_NO_DAEMON)
        }
    }
}

async fn upgrade_nginx(path: &Path) -> ExitCode {
    let socket = socket_of(path);
    // The config test, reload_timeout_ms for the new master and stop_timeout_ms (plus TERM
    // and KILL) for the old one must fit in here.
    match client::request(&socket, &Request::UpgradeNginx, Duration::from_secs(300)).await {
        Ok(response) if response.ok => {
            println!("nginx upgraded: the new master serves, the old one is gone");
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("nginx upgrade not done: {}", response.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => client_failure(e),
    }
}

/// No daemon answering has its own exit status (scripts tell "not running" from "refused").
fn client_failure(e: ClientError) -> ExitCode {
    eprintln!("nginx-ha: {e}");
    if matches!(e, ClientError::NotRunning { .. }) { ExitCode::from(EXIT_NO_DAEMON) } else { ExitCode::FAILURE }
}

async fn reload(path: &Path) -> ExitCode {
    let socket = socket_of(path);
    // nginx's own reload limit (reload_timeout_ms) plus the config test must fit in here.
    match client::request(&socket, &Request::Reload, Duration::from_secs(120)).await {
        Ok(response) if response.ok => {
            if response.applied.is_empty() {
                println!("reload applied");
            } else {
                println!("reload applied; nginx-ha settings changed: {}", response.applied.join(", "));
            }
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("reload rejected: {}", response.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => client_failure(e),
    }
}

/// Asks the daemon to re-execute itself, then waits until the new binary answers.
async fn upgrade(path: &Path) -> ExitCode {
    let socket = socket_of(path);
    let before = match client::request(&socket, &Request::Status, Duration::from_secs(5)).await {
        Ok(response) => response.status.map(|s| s.daemon).unwrap_or_default(),
        Err(e) => {
            eprintln!("nginx-ha: {e}");
            return ExitCode::from(EXIT_NO_DAEMON);
        }
    };
    match client::request(&socket, &Request::Upgrade, Duration::from_secs(60)).await {
        Ok(response) if !response.ok => {
            eprintln!("upgrade refused: {}", response.error.unwrap_or_default());
            return ExitCode::FAILURE;
        }
        // The daemon answers just before it re-executes; a closed connection is that too.
        _ => {}
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(response) = client::request(&socket, &Request::Status, Duration::from_secs(2)).await
            && let Some(status) = response.status
            && status.daemon.started_at_ms != before.started_at_ms
        {
            println!(
                "upgraded in place: nginx-ha {} answers (pid {}, upgrade {})",
                status.version, status.daemon.pid, status.daemon.upgrades
            );
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("nginx-ha: the upgraded daemon did not answer within 60 s; see its log");
    ExitCode::FAILURE
}
