//! What nginx itself says about its config: `nginx -t` (valid?), `nginx -T` (which files, which
//! pid file), `nginx -V` (compiled-in defaults). nginx is the only parser of its config we trust.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::process;

/// The arguments that keep nginx in the foreground under nginx-ha.
pub const FOREGROUND: &str = "daemon off; master_process on;";

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("cannot run {binary}: {source}; set [nginx] binary to the nginx executable")]
    Run { binary: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

/// Runs nginx with `args` as an owned child (so the orphan reaper does not take its status).
async fn run(binary: &Path, args: &[&std::ffi::OsStr]) -> Result<Output, ConfError> {
    let mut command = tokio::process::Command::new(binary);
    command.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = process::spawn_owned(|| command.spawn(), tokio::process::Child::id)
        .map_err(|source| ConfError::Run { binary: binary.to_path_buf(), source })?;
    let pid = child.id();
    let output = child.wait_with_output().await;
    if let Some(pid) = pid {
        process::release(pid as i32);
    }
    output.map_err(|source| ConfError::Run { binary: binary.to_path_buf(), source })
}

/// `nginx -t` with the same `-g` nginx-ha runs it with; Err carries nginx's own words.
pub async fn test(binary: &Path, config: &Path) -> Result<(), ConfError> {
    let output = run(
        binary,
        &["-t".as_ref(), "-q".as_ref(), "-c".as_ref(), config.as_os_str(), "-g".as_ref(), FOREGROUND.as_ref()],
    )
    .await?;
    if output.status.success() {
        return Ok(());
    }
    Err(ConfError::Invalid(explain(&String::from_utf8_lossy(&output.stderr), config)))
}

/// nginx's error text without its timestamp and pid prefix or the closing "test failed"
/// line, with a hint where nginx-ha knows the cause better.
fn explain(stderr: &str, config: &Path) -> String {
    let lines: Vec<String> = stderr
        .lines()
        .filter(|line| {
            !(line.trim().is_empty() || line.contains("configuration file") && line.ends_with("test failed"))
        })
        .map(strip_log_prefix)
        .collect();
    let text = if lines.is_empty() { stderr.trim().to_string() } else { lines.join("\n") };
    if text.contains("\"daemon\" directive is duplicate") || text.contains("\"master_process\" directive is duplicate")
    {
        format!(
            "{text}\nhint: nginx-ha runs nginx in the foreground itself (-g '{FOREGROUND}'); remove the `daemon` and `master_process` directives from the nginx config"
        )
    } else if text.contains(&format!("open() \"{}\" failed", config.display())) {
        format!(
            "{text}\nhint: nginx cannot read its main config file; set [nginx] config to the nginx config file, e.g. \"/etc/nginx/nginx.conf\""
        )
    } else {
        text
    }
}

/// "2026/11/25 10:47:26 [emerg] 14075#14075: message" → "[emerg] message".
fn strip_log_prefix(line: &str) -> String {
    if let Some(start) = line.find(" [")
        && let Some(level_end) = line[start..].find("] ").map(|i| start + i + 2)
        && let Some(colon) = line[level_end..].find(": ").map(|i| level_end + i)
        && line[level_end..colon].chars().all(|c| c.is_ascii_digit() || c == '#')
    {
        return format!("{}{}", &line[start + 1..level_end], &line[colon + 2..]);
    }
    line.trim().to_string()
}

/// What `nginx -T` reveals: every file the config reads and where the pid file is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigDump {
    /// The main file and every included file, as nginx opened them.
    pub files: Vec<PathBuf>,
    /// `include` patterns (globs), to notice files added to an included directory.
    pub include_patterns: Vec<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// `worker_processes` as a number (nginx's default is 1); None for `auto`, whose count
    /// depends on how this nginx version counts CPUs.
    pub worker_processes: Option<usize>,
}

pub async fn dump(binary: &Path, config: &Path) -> Result<ConfigDump, ConfError> {
    let output = run(
        binary,
        &["-T".as_ref(), "-q".as_ref(), "-c".as_ref(), config.as_os_str(), "-g".as_ref(), FOREGROUND.as_ref()],
    )
    .await?;
    if !output.status.success() {
        return Err(ConfError::Invalid(explain(&String::from_utf8_lossy(&output.stderr), config)));
    }
    let prefix = compiled_default(binary, "--prefix=").await;
    Ok(parse_dump(&String::from_utf8_lossy(&output.stdout), config, prefix.as_deref()))
}

/// Parses `nginx -T` output: "# configuration file PATH:" headers followed by each file's text.
pub fn parse_dump(text: &str, main: &Path, prefix: Option<&Path>) -> ConfigDump {
    let mut dump = ConfigDump { worker_processes: Some(1), ..ConfigDump::default() };
    let config_dir = main.parent().map(Path::to_path_buf).unwrap_or_default();
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("# configuration file ").and_then(|rest| rest.strip_suffix(':')) {
            dump.files.push(PathBuf::from(path));
            continue;
        }
        let statement = line.split('#').next().unwrap_or("").trim();
        if let Some(argument) = directive_argument(statement, "include") {
            // nginx resolves relative includes against the config prefix (the main file's dir).
            dump.include_patterns.push(config_dir.join(argument));
        } else if let Some(argument) = directive_argument(statement, "worker_processes") {
            dump.worker_processes = argument.parse().ok();
        } else if let Some(argument) = directive_argument(statement, "pid") {
            let path = PathBuf::from(argument);
            dump.pid_file = Some(match prefix {
                Some(prefix) if path.is_relative() => prefix.join(path),
                _ => path,
            });
        }
    }
    if dump.files.is_empty() {
        dump.files.push(main.to_path_buf());
    }
    dump
}

/// What the config includes, found without nginx's help: for a config nginx rejects (so
/// `nginx -T` says nothing), the files to watch for the fix. Follows `include` lines and
/// globs from the main file; statements spread over several lines are not seen.
pub fn scan_includes(main: &Path) -> ConfigDump {
    let config_dir = main.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut dump = ConfigDump::default();
    let mut pending = vec![main.to_path_buf()];
    while let Some(file) = pending.pop() {
        if dump.files.contains(&file) || dump.files.len() > 10_000 {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        dump.files.push(file);
        for statement in text.lines().flat_map(|line| line.split('#').next().unwrap_or("").split(';')) {
            // The statement starts after the last block brace on its line ("http { include x").
            let statement = format!("{};", statement.rsplit(['{', '}']).next().unwrap_or("").trim());
            let Some(argument) = directive_argument(&statement, "include") else { continue };
            let pattern = config_dir.join(argument);
            if let Ok(paths) = glob::glob(&pattern.to_string_lossy()) {
                pending.extend(paths.flatten());
            }
            dump.include_patterns.push(pattern);
        }
    }
    dump
}

/// `NAME ARG;` → ARG (quotes removed); None for other statements.
fn directive_argument<'a>(statement: &'a str, name: &str) -> Option<&'a str> {
    let rest = statement.strip_prefix(name)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let argument = rest.trim().strip_suffix(';')?.trim();
    Some(argument.trim_matches(|c| c == '"' || c == '\''))
}

/// A compiled-in default from `nginx -V` (e.g. `--pid-path=`, `--prefix=`).
pub async fn compiled_default(binary: &Path, key: &str) -> Option<PathBuf> {
    let output = run(binary, &["-V".as_ref()]).await.ok()?;
    let text = String::from_utf8_lossy(&output.stderr);
    text.split_whitespace().find_map(|word| word.strip_prefix(key)).map(PathBuf::from)
}

/// The pid file nginx writes: the configured one, else the `pid` directive of `dump`, else
/// the compiled-in default.
pub async fn pid_file(binary: &Path, dump: &ConfigDump, configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = configured.or(dump.pid_file.as_deref()) {
        return Some(path.to_path_buf());
    }
    let path = compiled_default(binary, "--pid-path=").await?;
    if path.is_relative() {
        let prefix = compiled_default(binary, "--prefix=").await?;
        return Some(prefix.join(path));
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_lists_files_includes_and_pid() {
        let text = "# configuration file /etc/nginx/nginx.conf:\n\
                    user www-data;\npid /run/nginx.pid;\nhttp {\n    include /etc/nginx/conf.d/*.conf;\n    include mime.types; # comment\n}\n\n\
                    # configuration file /etc/nginx/conf.d/site.conf:\nserver { listen 80; }\n\n\
                    # configuration file /etc/nginx/mime.types:\ntypes {}\n";
        let dump = parse_dump(text, Path::new("/etc/nginx/nginx.conf"), None);
        assert_eq!(
            dump.files,
            ["/etc/nginx/nginx.conf", "/etc/nginx/conf.d/site.conf", "/etc/nginx/mime.types"].map(PathBuf::from)
        );
        assert_eq!(dump.include_patterns, ["/etc/nginx/conf.d/*.conf", "/etc/nginx/mime.types"].map(PathBuf::from));
        assert_eq!(dump.pid_file, Some(PathBuf::from("/run/nginx.pid")));
    }

    #[test]
    fn scan_follows_includes_of_a_broken_config() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sites")).unwrap();
        std::fs::write(
            d.join("nginx.conf"),
            "events {}\nhttp { include sites/*.conf; # all sites\n  include mime.types; }\n",
        )
        .unwrap();
        std::fs::write(d.join("sites/a.conf"), "server { lisen 80; }\ninclude snippets.conf;\n").unwrap();
        std::fs::write(d.join("mime.types"), "types {}\n").unwrap();
        let dump = scan_includes(&d.join("nginx.conf"));
        assert!(dump.files.contains(&d.join("sites/a.conf")), "{dump:?}");
        assert!(dump.files.contains(&d.join("mime.types")), "{dump:?}");
        assert!(dump.include_patterns.contains(&d.join("sites/*.conf")), "{dump:?}");
        assert!(dump.include_patterns.contains(&d.join("snippets.conf")), "{dump:?}");
    }

    #[test]
    fn relative_pid_is_under_the_prefix() {
        let dump = parse_dump("pid logs/nginx.pid;\n", Path::new("/x/nginx.conf"), Some(Path::new("/usr/share/nginx")));
        assert_eq!(dump.pid_file, Some(PathBuf::from("/usr/share/nginx/logs/nginx.pid")));
        assert_eq!(dump.files, vec![PathBuf::from("/x/nginx.conf")]);
    }

    #[test]
    fn worker_processes_is_the_expected_worker_count() {
        let main = Path::new("/x/nginx.conf");
        assert_eq!(parse_dump("worker_processes 8;\n", main, None).worker_processes, Some(8));
        assert_eq!(parse_dump("events {}\n", main, None).worker_processes, Some(1), "nginx's default");
        assert_eq!(parse_dump("worker_processes auto;\n", main, None).worker_processes, None);
    }

    #[test]
    fn pid_directive_needs_a_word_boundary() {
        assert_eq!(directive_argument("pidfile x;", "pid"), None);
        assert_eq!(directive_argument("pid \"/run/x.pid\";", "pid"), Some("/run/x.pid"));
    }

    #[test]
    fn error_text_loses_timestamps_and_the_failed_line() {
        let message = explain(
            "2026/11/25 10:47:26 [emerg] 14075#14075: unknown directive \"lisen\" in /x/site.conf:1\nnginx: configuration file /x/nginx.conf test failed\n",
            Path::new("/x/nginx.conf"),
        );
        assert_eq!(message, "[emerg] unknown directive \"lisen\" in /x/site.conf:1");
    }

    #[test]
    fn duplicate_daemon_gets_a_hint() {
        let message = explain(
            "nginx: [emerg] \"daemon\" directive is duplicate in /etc/nginx/nginx.conf:3\nnginx: configuration file /etc/nginx/nginx.conf test failed\n",
            Path::new("/etc/nginx/nginx.conf"),
        );
        assert!(
            message.starts_with("nginx: [emerg] \"daemon\" directive is duplicate in /etc/nginx/nginx.conf:3\nhint:"),
            "{message}"
        );
        assert!(message.contains("remove the `daemon`"), "{message}");
    }

    #[test]
    fn a_missing_main_config_says_which_key_names_it() {
        let message = explain(
            "nginx: [emerg] open() \"/x/nginx.conf\" failed (2: No such file or directory)\n",
            Path::new("/x/nginx.conf"),
        );
        assert!(message.contains("\nhint:") && message.contains("set [nginx] config"), "{message}");
        let included =
            "nginx: [emerg] open() \"/x/mime.types\" failed (2: No such file or directory) in /x/nginx.conf:3\n";
        assert!(!explain(included, Path::new("/x/nginx.conf")).contains("hint"), "an included file is nginx's to name");
    }
}
