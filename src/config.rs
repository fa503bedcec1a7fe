//! ringback's one TOML config file: `${ENV_VAR}` interpolation, `RINGBACK__SECTION__KEY` environment
//! overrides, `*_file` secrets, and errors that name the file, line and key of every problem.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

use crate::domain::{Outcome, Provider};
use crate::normalize::{ParseContext, Region, callr::HmacAlgorithm};
use crate::route::{EmailAddress, Receiver, Route};

pub const DEFAULT_PATH: &str = "config/ringback.toml";
const ENV_PREFIX: &str = "RINGBACK__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub telegram: TelegramConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub templates: TemplatesConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub receivers: std::collections::BTreeMap<String, Receiver>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub digests: Vec<crate::digest::Digest>,
}

impl Config {
    /// The email addresses a digest goes to: its own `to` and its receiver's.
    pub fn digest_recipients(&self, digest: &crate::digest::Digest) -> Vec<String> {
        let mut to: Vec<String> = digest.to.0.iter().map(ToString::to_string).collect();
        if let Some(receiver) = digest
            .receiver
            .as_ref()
            .and_then(|r| self.receivers.get(r.get_ref()))
        {
            to.extend(receiver.email.0.iter().map(ToString::to_string));
        }
        to.dedup();
        to
    }

    pub fn digest(&self, name: &str) -> Option<&crate::digest::Digest> {
        self.digests.iter().find(|d| d.name() == name)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot token from @BotFather; unset: Telegram alerts are logged instead of sent.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub api_url: url::Url,
    /// Seconds before a Bot API request is abandoned (and retried later).
    pub timeout_seconds: u64,
    /// Receive the bot's updates by webhook at this public HTTPS URL (it must reach ringback's
    /// `/telegram/updates`); unset: long polling.
    pub webhook_url: Option<url::Url>,
    /// The secret Telegram sends with each webhook update; derived from the bot token when unset.
    pub webhook_secret: Option<Secret>,
    /// The sending limits ringback keeps (`[telegram.limits]`); Telegram's own when unset.
    pub limits: crate::deliver::limits::Limits,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token: None,
            token_file: None,
            api_url: url::Url::parse("https://api.telegram.org").expect("a valid URL"),
            timeout_seconds: 30,
            webhook_url: None,
            webhook_secret: None,
            limits: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://user:pass@host:587` (STARTTLS), `smtps://host:465`, `smtp://host:25?tls=none`.
    pub smtp_url: Option<Secret>,
    pub smtp_url_file: Option<PathBuf>,
    pub from: Option<EmailAddress>,
    /// Allow sending a password over a connection without TLS.
    pub allow_plain_auth: bool,
    pub timeout_seconds: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: None,
            smtp_url_file: None,
            from: None,
            allow_plain_auth: false,
            timeout_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Outcomes of inbound calls that alert, unless a route says otherwise.
    pub on: Spanned<Vec<Outcome>>,
    /// Seconds to wait after a call's deciding record, so records arriving together are seen together.
    pub settle_seconds: u64,
    /// Time zone of times shown in messages, and of routes' `when` windows.
    pub timezone: chrono_tz::Tz,
    /// Give up a delivery that keeps failing for this long.
    pub retry_deadline_hours: u64,
    /// Warn when TeleCMI sends agent-ring records but no call-level record for this long.
    pub call_records_missing_after_minutes: u64,
    /// Missed calls from one number inside this window make it a repeat caller ("3rd missed
    /// call from this number in 2 h"), and count towards a route's escalation.
    pub repeat_window_minutes: u64,
}

impl AlertsConfig {
    pub fn repeat_window(&self) -> chrono::Duration {
        window_minutes(self.repeat_window_minutes)
    }
}

/// A look-back window of `minutes`, capped at ten years: a larger value in the config would
/// otherwise overflow the time arithmetic it feeds.
pub fn window_minutes(minutes: u64) -> chrono::Duration {
    const TEN_YEARS: u64 = 10 * 366 * 24 * 60;
    chrono::Duration::minutes(i64::try_from(minutes.min(TEN_YEARS)).unwrap_or(0))
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            on: Spanned::new(
                0..0,
                vec![Outcome::Missed, Outcome::Canceled, Outcome::Abandoned],
            ),
            settle_seconds: 3,
            timezone: chrono_tz::Asia::Kolkata,
            retry_deadline_hours: 24,
            call_records_missing_after_minutes: 30,
            repeat_window_minutes: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Records, raw requests and delivered messages older than this are deleted; 0 keeps all.
    pub days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 90 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// The folder of message templates, relative to the working directory.
    pub dir: PathBuf,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig {
            dir: PathBuf::from("templates"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Webhook bodies larger than this are refused with 413.
    pub body_limit_bytes: usize,
    /// Read the client address from `X-Forwarded-For` (only behind a proxy that overwrites it).
    pub trust_forwarded_for: bool,
    /// Enables `POST /-/reload` with this token.
    pub reload_token: Option<Secret>,
    /// Webhook requests allowed per second from one source address (0: no limit).
    pub rate_limit_per_second: u32,
    /// Requests one source may send at once before the per-second limit applies.
    pub rate_limit_burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            body_limit_bytes: 64 * 1024,
            trust_forwarded_for: false,
            reload_token: None,
            // Generous: a provider re-delivering a backlog after an outage sends bursts.
            rate_limit_per_second: 200,
            rate_limit_burst: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://path/to/file.db` (created on first start) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: "sqlite://data/ringback.db".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub telecmi: Option<TelecmiConfig>,
    pub callr: Option<CallrConfig>,
    pub callerdesk: Option<CallerdeskConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelecmiConfig {
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
    #[serde(default = "india")]
    pub default_region: Region,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallrConfig {
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
    #[serde(default = "france")]
    pub default_region: Region,
    /// When set, every Callr webhook must carry a valid `X-CALLR-HmacSignature`.
    pub hmac_secret: Option<Secret>,
    pub hmac_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub hmac_algorithm: HmacAlgorithm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerdeskConfig {
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_from: Vec<ipnet::IpNet>,
    #[serde(default = "india")]
    pub default_region: Region,
    /// CallerDesk writes local times with no offset, in the account's time zone.
    #[serde(default = "kolkata")]
    pub timezone: chrono_tz::Tz,
}

fn india() -> Region {
    Region(phonenumber::country::Id::IN)
}
fn france() -> Region {
    Region(phonenumber::country::Id::FR)
}
fn kolkata() -> chrono_tz::Tz {
    chrono_tz::Asia::Kolkata
}

/// What the webhook front door needs to know about one enabled provider.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub token: Secret,
    pub allow_from: Vec<ipnet::IpNet>,
    pub parse: ParseContext,
    pub hmac: Option<(Secret, HmacAlgorithm)>,
}

impl Config {
    /// The settings of `provider`, or `None` when it is absent or has no token (then disabled).
    pub fn provider(&self, provider: Provider) -> Option<ProviderSettings> {
        let p = &self.providers;
        let (token, allow_from, hmac) = match provider {
            Provider::Telecmi => {
                let c = p.telecmi.as_ref()?;
                (&c.token, &c.allow_from, None)
            }
            Provider::Callr => {
                let c = p.callr.as_ref()?;
                let hmac = c
                    .hmac_secret
                    .clone()
                    .filter(|s| !s.expose().is_empty())
                    .map(|s| (s, c.hmac_algorithm));
                (&c.token, &c.allow_from, hmac)
            }
            Provider::Callerdesk => {
                let c = p.callerdesk.as_ref()?;
                (&c.token, &c.allow_from, None)
            }
        };
        let token = token.clone().filter(|t| !t.expose().is_empty())?;
        Some(ProviderSettings {
            token,
            allow_from: allow_from.clone(),
            parse: self.parse_context(provider),
            hmac,
        })
    }

    /// How `provider`'s payloads are read (number region, local time zone), whether or not it is
    /// enabled: routing and digests read stored records of any provider the same way.
    pub fn parse_context(&self, provider: Provider) -> ParseContext {
        let p = &self.providers;
        let (region, timezone) = match provider {
            Provider::Telecmi => (
                p.telecmi.as_ref().map_or_else(india, |c| c.default_region),
                kolkata(),
            ),
            Provider::Callr => (
                p.callr.as_ref().map_or_else(france, |c| c.default_region),
                kolkata(),
            ),
            Provider::Callerdesk => p
                .callerdesk
                .as_ref()
                .map_or_else(|| (india(), kolkata()), |c| (c.default_region, c.timezone)),
        };
        ParseContext { region, timezone }
    }

    /// Providers listed in the file whose token is empty: their endpoint answers 404.
    pub fn providers_without_token(&self) -> Vec<Provider> {
        let p = &self.providers;
        let listed = [
            (Provider::Telecmi, p.telecmi.is_some()),
            (Provider::Callr, p.callr.is_some()),
            (Provider::Callerdesk, p.callerdesk.is_some()),
        ];
        listed
            .into_iter()
            .filter(|(provider, listed)| *listed && self.provider(*provider).is_none())
            .map(|(provider, _)| provider)
            .collect()
    }
}

/// A secret from the config: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// One problem found in a config file, located where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; check the path given with --config", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems, overrides))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
        /// Environment overrides applied before the problems were found.
        overrides: Vec<String>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem], overrides: &[String]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&path.display().to_string());
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = p.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(": ");
        if let Some(key) = &p.key {
            out.push_str(&format!("key `{key}`: "));
        }
        out.push_str(&p.message);
    }
    if !overrides.is_empty() {
        out.push_str(&format!(
            "\n(environment overrides were applied: {})",
            overrides.join(", ")
        ));
    }
    out
}

/// Loads and checks the config at `path`, reading variables from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, std::env::vars())
}

/// Loads the config at `path` with the given environment (tests pass their own).
pub fn load_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_with_env(path, &text, base, env)
}

/// Parses config `text` that was read from `path`; relative `*_file` paths resolve from `base`.
pub fn parse_with_env(
    path: &Path,
    text: &str,
    base: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let source = Source::new(text);
    let invalid = |problems: Vec<Problem>, overrides: Vec<String>| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
        overrides,
    };
    let spanned = toml_edit::Document::parse(text.to_owned()).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        invalid(vec![source.problem(span, e.message().trim())], vec![])
    })?;
    let mut doc = spanned.clone().into_mut();

    let mut problems = Vec::new();
    interpolate(&mut doc, &spanned, &source, &env, &mut problems);
    let overrides = apply_overrides(&mut doc, &env, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems, overrides));
    }

    // The edited document keeps every untouched line where it was, so spans still point into
    // the user's file (overrides of keys absent from the file are appended at its end).
    let edited = doc.to_string();
    let edited_source = Source::new(&edited);
    let mut config: Config = toml_edit::de::from_str(&edited).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        invalid(
            vec![edited_source.problem(span, e.message().trim())],
            overrides.clone(),
        )
    })?;

    read_secret_files(&mut config, base, &spanned, &source, &mut problems);
    if let Ok(edited_doc) = toml_edit::Document::parse(edited.clone()) {
        check_references(&config, &edited_doc, &edited_source, &mut problems);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(invalid(problems, overrides))
    }
}

/// Line lookups in one text.
struct Source<'a> {
    text: &'a str,
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Self {
        Source { text }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, column)
    }

    /// The dotted key written on the line at `offset`, prefixed with its enclosing `[table]`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let (line_no, _) = self.line_col(offset);
        let lines: Vec<&str> = self.text.lines().collect();
        let line = lines.get(line_no - 1)?.trim();
        let header = |l: &str| -> Option<String> {
            let l = l.trim();
            let inner = l.strip_prefix('[')?.split(']').next()?;
            Some(inner.trim_start_matches('[').trim().to_owned())
        };
        if let Some(table) = header(line) {
            return Some(table);
        }
        let key = line.split('=').next()?.trim().trim_matches('"').to_owned();
        if key.is_empty() || !line.contains('=') {
            return None;
        }
        let table = lines[..line_no - 1].iter().rev().find_map(|l| header(l));
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        })
    }

    fn problem(&self, span: Range<usize>, message: &str) -> Problem {
        let (line, column) = self.line_col(span.start);
        Problem {
            line: Some(line),
            column: Some(column),
            key: self.key_at(span.start),
            message: message.replace('\n', " "),
        }
    }
}

/// Where the key at `path` is written in the original file.
fn span_of(doc: &toml_edit::Document<String>, path: &[String]) -> Option<Range<usize>> {
    let mut item = doc.as_item();
    let mut span = None;
    for segment in path {
        let table = item.as_table_like()?;
        let (key, next) = table.get_key_value(segment)?;
        span = key.span().or_else(|| next.span());
        item = next;
    }
    span
}

fn problem_at(
    doc: &toml_edit::Document<String>,
    source: &Source<'_>,
    path: &[String],
    message: String,
) -> Problem {
    let (line, column) = span_of(doc, path)
        .map(|s| source.line_col(s.start))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)));
    Problem {
        line,
        column,
        key: Some(path.join(".")),
        message,
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` in every string value; `$${` writes a literal `${`.
fn interpolate(
    doc: &mut toml_edit::DocumentMut,
    spanned: &toml_edit::Document<String>,
    source: &Source<'_>,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) {
    fn walk_value(
        value: &mut toml_edit::Value,
        path: &mut Vec<String>,
        expand: &mut dyn FnMut(&[String], &str) -> Option<String>,
    ) {
        match value {
            toml_edit::Value::String(s) if s.value().contains("${") => {
                if let Some(new) = expand(path, s.value()) {
                    let decor = s.decor().clone();
                    let mut formatted = toml_edit::Formatted::new(new);
                    *formatted.decor_mut() = decor;
                    *s = formatted;
                }
            }
            toml_edit::Value::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    path.push(i.to_string());
                    walk_value(v, path, expand);
                    path.pop();
                }
            }
            toml_edit::Value::InlineTable(t) => {
                for (k, v) in t.iter_mut() {
                    path.push(k.get().to_owned());
                    walk_value(v, path, expand);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    fn walk_item(
        item: &mut toml_edit::Item,
        path: &mut Vec<String>,
        expand: &mut dyn FnMut(&[String], &str) -> Option<String>,
    ) {
        match item {
            toml_edit::Item::Value(v) => walk_value(v, path, expand),
            toml_edit::Item::Table(t) => {
                for (k, v) in t.iter_mut() {
                    path.push(k.get().to_owned());
                    walk_item(v, path, expand);
                    path.pop();
                }
            }
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter_mut().enumerate() {
                    path.push(i.to_string());
                    for (k, v) in t.iter_mut() {
                        path.push(k.get().to_owned());
                        walk_item(v, path, expand);
                        path.pop();
                    }
                    path.pop();
                }
            }
            toml_edit::Item::None => {}
        }
    }
    let mut expand = |path: &[String], text: &str| match expand_vars(text, env) {
        Ok(s) => Some(s),
        Err(message) => {
            problems.push(problem_at(spanned, source, path, message));
            None
        }
    };
    walk_item(doc.as_item_mut(), &mut Vec::new(), &mut expand);
}

fn expand_vars(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner.find('}').ok_or_else(|| {
                "an unclosed `${` in a string; write `${NAME}`, or `$${` for a literal `${`"
                    .to_owned()
            })?;
            let expr = &inner[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "`${{{expr}}}` does not name an environment variable"
                ));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; set it, or write `${{{name}:-}}` \
                         to make it optional"
                    ));
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `RINGBACK__SERVER__LISTEN=...` style variables; returns the names applied.
fn apply_overrides(
    doc: &mut toml_edit::DocumentMut,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let mut applied = Vec::new();
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem {
                line: None,
                column: None,
                key: None,
                message: format!(
                    "environment variable {name} does not name a key: write RINGBACK__SECTION__KEY"
                ),
            });
            continue;
        }
        let (last, parents) = path
            .split_last()
            .expect("split yields one segment at least");
        let table = match table_at(doc.as_table_mut(), parents) {
            Ok(table) => table,
            Err(segment) => {
                problems.push(Problem {
                    line: None,
                    column: None,
                    key: Some(path.join(".")),
                    message: format!(
                        "environment variable {name} goes through `{segment}`, which is not a table"
                    ),
                });
                continue;
            }
        };
        // A key the file writes as a string stays a string (a numeric token must not become an
        // integer); otherwise the value is read as TOML when it can be, as text when not.
        let existing_is_string = table.get(last).is_some_and(|i| i.is_str());
        let new_value = match value.parse::<toml_edit::Value>() {
            Ok(v) if !existing_is_string => v,
            _ => toml_edit::Value::from(value.as_str()),
        };
        table.insert(last, toml_edit::Item::Value(new_value));
        applied.push(name.clone());
    }
    applied
}

/// The table at `path` below `table`, created where missing; `Err` names a segment that is not a table.
fn table_at<'a>(
    table: &'a mut dyn toml_edit::TableLike,
    path: &[String],
) -> Result<&'a mut dyn toml_edit::TableLike, String> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(table);
    };
    let entry = table
        .entry(first)
        .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
    match entry.as_table_like_mut() {
        Some(next) => table_at(next, rest),
        None => Err(first.clone()),
    }
}

fn read_secret_files(
    config: &mut Config,
    base: &Path,
    spanned: &toml_edit::Document<String>,
    source: &Source<'_>,
    problems: &mut Vec<Problem>,
) {
    // Reads `<value_key>_file` (at `section`) into `value`, unless the value is set already.
    let mut read =
        |section: &[&str], value_key: &str, value: &mut Option<Secret>, file: &Option<PathBuf>| {
            let Some(file) = file else { return };
            let mut path: Vec<String> = section.iter().map(|s| s.to_string()).collect();
            path.push(format!("{value_key}_file"));
            if value.as_ref().is_some_and(|v| !v.expose().is_empty()) {
                problems.push(problem_at(
                    spanned,
                    source,
                    &path,
                    format!("set either `{value_key}` or `{value_key}_file`, not both"),
                ));
                return;
            }
            let full = if file.is_absolute() {
                file.clone()
            } else {
                base.join(file)
            };
            match std::fs::read_to_string(&full) {
                Ok(text) => *value = Some(Secret(text.trim().to_owned())),
                Err(e) => problems.push(problem_at(
                    spanned,
                    source,
                    &path,
                    format!("cannot read secret file {}: {e}", full.display()),
                )),
            }
        };
    let p = &mut config.providers;
    if let Some(c) = &mut p.telecmi {
        read(
            &["providers", "telecmi"],
            "token",
            &mut c.token,
            &c.token_file,
        );
    }
    if let Some(c) = &mut p.callr {
        read(
            &["providers", "callr"],
            "token",
            &mut c.token,
            &c.token_file,
        );
        read(
            &["providers", "callr"],
            "hmac_secret",
            &mut c.hmac_secret,
            &c.hmac_secret_file,
        );
    }
    if let Some(c) = &mut p.callerdesk {
        read(
            &["providers", "callerdesk"],
            "token",
            &mut c.token,
            &c.token_file,
        );
    }
    let t = &mut config.telegram;
    read(&["telegram"], "token", &mut t.token, &t.token_file);
    let e = &mut config.email;
    read(&["email"], "smtp_url", &mut e.smtp_url, &e.smtp_url_file);
}

/// Checks what one key says about another: routes name receivers that exist, one default route,
/// outcomes that can alert, an SMTP URL ringback can use.
fn check_references(
    config: &Config,
    doc: &toml_edit::Document<String>,
    source: &Source<'_>,
    problems: &mut Vec<Problem>,
) {
    let key = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let at = |span: Range<usize>, message: String| source.problem(span, &message);
    let alertable = |outcomes: &[Outcome]| {
        outcomes
            .iter()
            .find(|o| matches!(o, Outcome::Answered | Outcome::NotACallResult))
            .map(|o| {
                format!(
                    "`{o}` cannot alert; use missed, canceled, abandoned, busy, failed or unknown"
                )
            })
    };
    if let Some(message) = alertable(config.alerts.on.get_ref()) {
        problems.push(at(config.alerts.on.span(), message));
    }
    let receivers: Vec<&str> = config.receivers.keys().map(String::as_str).collect();
    let known = |name: &Spanned<String>, problems: &mut Vec<Problem>| {
        if !config.receivers.contains_key(name.get_ref()) {
            problems.push(at(
                name.span(),
                format!(
                    "receiver `{}` is not defined; add a [receivers.{}] section{}",
                    name.get_ref(),
                    name.get_ref(),
                    if receivers.is_empty() {
                        String::new()
                    } else {
                        format!(" or use one of: {}", receivers.join(", "))
                    }
                ),
            ));
        }
    };
    let mut names = std::collections::HashSet::new();
    let mut default_route: Option<&Route> = None;
    for route in &config.routes {
        if !names.insert(route.name()) {
            problems.push(at(
                route.name.span(),
                format!(
                    "two routes are named `{}`; route names must be unique",
                    route.name()
                ),
            ));
        }
        known(&route.receiver, problems);
        if let Some(escalate) = &route.escalate {
            known(&escalate.receiver, problems);
            if escalate.after < 2 {
                problems.push(at(
                    escalate.receiver.span(),
                    "escalate.after must be 2 or more (the count of missed calls from one number \
                     that escalates)"
                        .into(),
                ));
            }
        }
        if let Some(agent_rings) = &route.agent_rings {
            known(agent_rings, problems);
        }
        if let Some(on) = &route.on
            && let Some(message) = alertable(on.get_ref())
        {
            problems.push(at(on.span(), message));
        }
        if route.is_default() {
            if let Some(first) = default_route {
                problems.push(at(
                    route.name.span(),
                    format!("routes `{}` and `{}` both have no `match`, and only one route can be the default", first.name(), route.name()),
                ));
            } else {
                default_route = Some(route);
            }
        }
    }
    let mut digest_names = std::collections::HashSet::new();
    for digest in &config.digests {
        if !digest_names.insert(digest.name()) {
            problems.push(at(
                digest.name.span(),
                format!("two digests are named `{}`", digest.name()),
            ));
        }
        for route in digest.routes.iter().flatten() {
            if !config.routes.iter().any(|r| r.name() == route.get_ref()) {
                problems.push(at(
                    route.span(),
                    format!("route `{}` is not defined in [[routes]]", route.get_ref()),
                ));
            }
        }
        if let Some(receiver) = &digest.receiver {
            known(receiver, problems);
        }
        if config.digest_recipients(digest).is_empty() {
            problems.push(at(
                digest.name.span(),
                format!("digest `{}` has nobody to send to: set `to` or a `receiver` with email addresses", digest.name()),
            ));
        }
        if let Some(message) = alertable(&digest.outcomes) {
            problems.push(at(
                digest.name.span(),
                format!("digest `{}`: {message}", digest.name()),
            ));
        }
    }
    if let Some(url) = &config.email.smtp_url
        && !url.expose().is_empty()
    {
        if let Err(e) =
            crate::deliver::email::SmtpSettings::parse(url.expose(), config.email.allow_plain_auth)
        {
            problems.push(problem_at(
                doc,
                source,
                &key(&["email", "smtp_url"]),
                e.to_string(),
            ));
        }
        if config.email.from.is_none() {
            problems.push(problem_at(
                doc,
                source,
                &key(&["email", "smtp_url"]),
                "email.smtp_url is set, so email.from must name the sender, like \"ringback <alerts@example.com>\"".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        parse_with_env(
            Path::new("ringback.toml"),
            text,
            Path::new("."),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn only_problem(err: ConfigError) -> Problem {
        let problems = err.problems().to_vec();
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn the_shipped_config_loads() {
        let text = include_str!("../config/ringback.toml");
        let config = parse(text, &[]).unwrap();
        assert_eq!(config.storage.url, "sqlite://data/ringback.db");
        assert_eq!(config.server.body_limit_bytes, 65536);
        // Without tokens in the environment every provider is listed but disabled.
        assert_eq!(config.providers_without_token().len(), 3);
        let with_token = parse(text, &[("RINGBACK_TELECMI_TOKEN", "t0k")]).unwrap();
        assert_eq!(
            with_token
                .provider(Provider::Telecmi)
                .unwrap()
                .token
                .expose(),
            "t0k"
        );
    }

    #[test]
    fn telegram_limits_default_to_telegrams_and_are_checked() {
        let default = parse("", &[]).unwrap();
        assert_eq!(
            default.telegram.limits,
            crate::deliver::limits::Limits::default()
        );
        let off = parse(
            "[telegram.limits]\nchat_interval_ms = 0\ngroup_per_minute = 0\nper_second = 0\n",
            &[],
        )
        .unwrap();
        assert_eq!(off.telegram.limits.per_second, 0);
        assert_eq!(off.telegram.limits.chat_interval_ms, 0);
        let p = only_problem(parse("[telegram.limits]\nper_second = -1\n", &[]).unwrap_err());
        assert_eq!(p.line, Some(2));
        assert_eq!(p.key.as_deref(), Some("telegram.limits.per_second"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 5\n", &[]).unwrap_err();
        let p = only_problem(err);
        assert_eq!(p.line, Some(3));
        assert_eq!(p.key.as_deref(), Some("server.listen_port"));
        assert!(p.message.contains("unknown field `listen_port`"), "{p:?}");
        let err = parse(
            "[providers.telecmi]\ntoken = \"x\"\nhmac_secret = \"y\"\n",
            &[],
        )
        .unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with(
                "ringback.toml:3:1: key `providers.telecmi.hmac_secret`: unknown field"
            ),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_are_located() {
        let text = "[providers.callerdesk]\ntoken = \"x\"\ntimezone = \"Mars/Olympus\"\n";
        let p = only_problem(parse(text, &[]).unwrap_err());
        assert_eq!(p.line, Some(3));
        assert_eq!(p.key.as_deref(), Some("providers.callerdesk.timezone"));
        let text = "[providers.callr]\ntoken = \"x\"\nallow_from = [\"10.0.0.0/33\"]\n";
        assert_eq!(only_problem(parse(text, &[]).unwrap_err()).line, Some(3));
        let text = "[providers.callr]\ntoken = \"x\"\nhmac_algorithm = \"sha1\"\n";
        assert!(
            only_problem(parse(text, &[]).unwrap_err())
                .message
                .contains("sha256")
        );
        let p = only_problem(parse("[server\nlisten = 1", &[]).unwrap_err());
        assert_eq!(p.line, Some(1));
    }

    #[test]
    fn env_interpolation() {
        let text = "[providers.telecmi]\n# secret\ntoken = \"${TCMI}\"\n";
        let c = parse(text, &[("TCMI", "abc\"def")]).unwrap();
        assert_eq!(
            c.providers.telecmi.unwrap().token.unwrap().expose(),
            "abc\"def"
        );
        let p = only_problem(parse(text, &[]).unwrap_err());
        assert_eq!(p.line, Some(3));
        assert_eq!(p.key.as_deref(), Some("providers.telecmi.token"));
        assert!(p.message.contains("TCMI is not set"), "{p:?}");
        let c = parse("[storage]\nurl = \"${DB:-sqlite://x.db}\"\n", &[]).unwrap();
        assert_eq!(c.storage.url, "sqlite://x.db");
        let c = parse("[storage]\nurl = \"a$${b}$c\"\n", &[]).unwrap();
        assert_eq!(c.storage.url, "a${b}$c");
        assert!(parse("[storage]\nurl = \"${9x}\"\n", &[]).is_err());
    }

    #[test]
    fn env_overrides() {
        let text = "[server]\nlisten = \"0.0.0.0:8080\"\n[providers.telecmi]\ntoken = \"x\"\n";
        let c = parse(
            text,
            &[
                ("RINGBACK__SERVER__LISTEN", "127.0.0.1:9000"),
                ("RINGBACK__SERVER__BODY_LIMIT_BYTES", "1024"),
                ("RINGBACK__PROVIDERS__TELECMI__TOKEN", "12345"),
                ("RINGBACK__PROVIDERS__CALLR__TOKEN", "c"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.server.body_limit_bytes, 1024);
        assert_eq!(
            c.providers.telecmi.unwrap().token.unwrap().expose(),
            "12345"
        );
        assert_eq!(c.providers.callr.unwrap().token.unwrap().expose(), "c");
        let err = parse(text, &[("RINGBACK__SERVER__LISTEN_ON", "x")]).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("listen_on"), "{shown}");
        assert!(shown.contains("RINGBACK__SERVER__LISTEN_ON"), "{shown}");
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
        let text = "[providers.callr]\ntoken_file = \"tok\"\nhmac_secret_file = \"missing\"\n";
        let err = parse_with_env(Path::new("c.toml"), text, dir.path(), []).unwrap_err();
        let p = only_problem(err);
        assert_eq!(p.line, Some(3));
        assert_eq!(p.key.as_deref(), Some("providers.callr.hmac_secret_file"));
        let text = "[providers.callr]\ntoken_file = \"tok\"\n";
        let c = parse_with_env(Path::new("c.toml"), text, dir.path(), []).unwrap();
        assert_eq!(
            c.provider(Provider::Callr).unwrap().token.expose(),
            "from-file"
        );
    }

    #[test]
    fn huge_windows_are_capped_rather_than_overflowing() {
        assert_eq!(window_minutes(120), chrono::Duration::hours(2));
        let huge = window_minutes(u64::MAX);
        assert_eq!(huge, window_minutes(10 * 366 * 24 * 60));
        // What the dispatcher does with it must not overflow.
        let _ = chrono::Utc::now() - huge;
    }

    #[test]
    fn escalation_mistakes_are_named_with_their_line() {
        let text = r#"
[receivers.front]
telegram = [-1001]

[[routes]]
name = "all"
receiver = "front"
escalate = { receiver = "managers", after = 1 }
"#;
        let err = parse(text, &[]).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 2, "{err}");
        for p in problems {
            assert_eq!(p.line, Some(8), "{p:?}");
        }
        assert!(
            problems[0]
                .message
                .contains("receiver `managers` is not defined; add a [receivers.managers] section")
        );
        assert!(
            problems[1]
                .message
                .contains("escalate.after must be 2 or more")
        );
    }

    #[test]
    fn routing_mistakes_are_named_with_their_line() {
        let text = r#"
[receivers.front]
telegram = [-1001]

[[routes]]
name = "sales"
match = { group = "Sales*" }
receiver = "sales-desk"

[[routes]]
name = "a"
receiver = "front"
on = ["answered"]

[[routes]]
name = "b"
receiver = "front"
"#;
        let err = parse(text, &[]).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 3, "{err}");
        assert_eq!(problems[0].line, Some(8));
        assert_eq!(problems[0].key.as_deref(), Some("routes.receiver"));
        assert!(
            problems[0]
                .message
                .contains("receiver `sales-desk` is not defined")
        );
        assert!(problems[0].message.contains("use one of: front"));
        assert_eq!(problems[1].line, Some(13));
        assert!(problems[1].message.contains("`answered` cannot alert"));
        assert_eq!(problems[2].line, Some(16));
        assert!(
            problems[2]
                .message
                .contains("only one route can be the default")
        );
    }

    #[test]
    fn bad_matchers_are_located() {
        let text = "[receivers.r]\n[[routes]]\nname = \"x\"\nreceiver = \"r\"\nmatch = { group = \"~(\" }\n";
        let p = only_problem(parse(text, &[]).unwrap_err());
        assert_eq!(p.line, Some(5));
        assert!(p.message.contains("not a valid regex"), "{p:?}");
        let text = "[receivers.r]\n[[routes]]\nname = \"x\"\nreceiver = \"r\"\nmatch = { when = \"weekdays\" }\n";
        let p = only_problem(parse(text, &[]).unwrap_err());
        assert_eq!(p.line, Some(5));
        assert!(p.message.contains("not a time window"), "{p:?}");
        let text = "[receivers.r]\n[[routes]]\nname = \"x\"\nreceiver = \"r\"\nmatch = { team = \"Sales\" }\n";
        let p = only_problem(parse(text, &[]).unwrap_err());
        assert!(p.message.contains("unknown field `team`"), "{p:?}");
    }

    #[test]
    fn email_needs_a_usable_url_and_a_sender() {
        let err = parse(
            "[email]\nsmtp_url = \"smtp://u:pw@h:25?tls=none\"\nfrom = \"a@b.c\"\n",
            &[],
        )
        .unwrap_err();
        let p = only_problem(err);
        assert_eq!(p.key.as_deref(), Some("email.smtp_url"));
        assert!(p.message.contains("without TLS"));
        assert!(!p.message.contains("pw"));
        assert_eq!(p.line, Some(2));
        let p = only_problem(parse("[email]\nsmtp_url = \"smtps://h\"\n", &[]).unwrap_err());
        assert!(
            p.message.contains("email.from must name the sender"),
            "{p:?}"
        );
        assert!(
            parse(
                "[email]\nsmtp_url = \"smtps://h\"\nfrom = \"ringback <a@b.c>\"\n",
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = parse(
            "[providers.callr]\ntoken = \"hunter2\"\nhmac_secret = \"s3\"\n",
            &[],
        )
        .unwrap();
        let shown = format!("{c:?} {:?}", c.provider(Provider::Callr));
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3\""),
            "{shown}"
        );
    }
}
