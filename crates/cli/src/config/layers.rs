//! The one mechanism that layers every command's options: its defaults < the TOML file <
//! `FLYRTECH_*` variables < flags.
//!
//! - **Defaults** are written once, as clap's `default_value`s on the option (which `--help`
//!   prints), most of them read from the settings type they configure.
//! - **Variables and flags**: clap reads both (every option has a variable,
//!   `FLYRTECH_<LONG_NAME>` unless it names its own) and says which one gave each value
//!   ([`clap::ArgMatches::value_source`]), so the variable beats the file and the flag beats both.
//! - **The file** ([`ConfigFile`]): the shared options at its top, each command's in its own
//!   table (`[serve]`, `[relay]`, `[compare]`, …), keys as the long options with underscores.
//!
//! [figment] merges the three layers (what clap parsed, the file's table, what clap was told
//! explicitly) and one serde pass turns the merge back into the command's own `Args` type: a
//! value from the file is read by the same `FromStr` as its flag ([`super::values::text`]).
//!
//! # What it guarantees
//! - A key the file should not have is refused before anything runs, by its name, its line and
//!   the file's name; a table for a command this binary lacks is allowed only when it is the
//!   other binary's (one file serves both).
//! - A bad value is refused with its key, its line and the layer that gave it, and never with
//!   its text when the key may hold a password ([`SECRET_KEYS`]).
//! - A bad flag or variable is clap's usage error: exit 2, as an unknown flag is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CommonArgs, ConfigError, Settings};

/// Every command of both binaries: one file may configure the service and the lab, and each
/// binary checks the tables of its own commands (a binary with a command missing here refuses
/// to start).
pub const COMMANDS: [&str; 14] = [
    "serve",
    "relay",
    "audit",
    "migrate",
    "import-legacy",
    "project",
    "api-key",
    "redis-acl",
    "compare",
    "verify",
    "backlog",
    "project-bench",
    "migrate-bench",
    "soak",
];

/// The keys whose values may hold a secret (URLs, with their passwords): an error about one
/// never shows its value.
pub const SECRET_KEYS: [&str; 6] = [
    "redis_url",
    "lock_urls",
    "bus",
    "events_url",
    "postgres",
    "http",
];

/// The process' command line, layered: the binary's whole command `C` (whose shared options
/// `common` reaches) with those options merged, and the [`Settings`] made of them, which layer
/// the subcommand's own options in turn ([`Settings::layer`]).
///
/// # Errors
/// A [`ConfigError`] for a file that cannot be read, has a key it should not, or a bad value.
/// A usage error (an unknown flag, a bad flag or variable) exits 2 here, as clap does.
pub fn parse<C>(common: fn(&mut C) -> &mut CommonArgs) -> Result<(C, Settings), ConfigError>
where
    C: CommandFactory + FromArgMatches,
{
    let matches = with_variables(C::command()).get_matches();
    layered(&matches, common)
}

/// [`parse`] of `argv` (its first item the binary's name), a usage error returned, not exited
/// on: for tests.
///
/// # Errors
/// As [`parse`], the usage error as [`ConfigError::Usage`].
pub fn parse_from<C, I, T>(
    argv: I,
    common: fn(&mut C) -> &mut CommonArgs,
) -> Result<(C, Settings), ConfigError>
where
    C: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = with_variables(C::command())
        .try_get_matches_from(argv)
        .map_err(|e| ConfigError::Usage(e.to_string()))?;
    layered(&matches, common)
}

fn layered<C>(
    matches: &ArgMatches,
    common: fn(&mut C) -> &mut CommonArgs,
) -> Result<(C, Settings), ConfigError>
where
    C: CommandFactory + FromArgMatches,
{
    let command = with_variables(C::command());
    // A table for a command missing from the list would be taken for the other binary's and
    // never checked.
    if let Some(sub) = command
        .get_subcommands()
        .find(|sub| !COMMANDS.contains(&sub.get_name()))
    {
        return Err(ConfigError::Internal(format!(
            "the command {} is not in config::COMMANDS",
            sub.get_name()
        )));
    }
    let mut cli = C::from_arg_matches(matches).map_err(|e| ConfigError::Usage(e.to_string()))?;
    let file = ConfigFile::load(common(&mut cli).config.as_deref())?;
    if let Some(file) = &file {
        file.check_keys(&command)?;
    }
    let ids = |command: &clap::Command| -> BTreeSet<String> {
        command
            .get_arguments()
            .map(|arg| arg.get_id().as_str().to_owned())
            .collect()
    };
    let layers = Layers {
        file,
        shared: ids(&command),
        command: matches.subcommand().and_then(|(name, sub)| {
            let own = ids(command.find_subcommand(name)?);
            Some((name.to_owned(), own, sub.clone()))
        }),
    };
    let shared = layers.apply(None, &layers.shared, matches, common(&mut cli).clone())?;
    *common(&mut cli) = shared.clone();
    let settings = Settings::resolve(&shared, layers)?;
    Ok((cli, settings))
}

/// Gives every option without a variable of its own `FLYRTECH_<LONG_NAME>`
/// (`--rate-limit`: `FLYRTECH_RATE_LIMIT`), in the binary and each subcommand.
pub fn with_variables(command: clap::Command) -> clap::Command {
    fn name(arg: clap::Arg) -> clap::Arg {
        let variable = match (arg.get_long(), arg.get_env()) {
            (Some(long), None) if !matches!(long, "help" | "version") => {
                format!("FLYRTECH_{}", long.replace('-', "_").to_ascii_uppercase())
            }
            _ => return arg,
        };
        arg.env(variable)
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(command.mut_args(name), |command, sub| {
            command.mut_subcommand(sub, |s| s.mut_args(name))
        })
}

/// What the layers are made of, beside what clap parsed: the file, and the subcommand's own
/// matches (which of its options the command line or a variable gave).
#[derive(Debug, Clone)]
pub struct Layers {
    file: Option<ConfigFile>,
    /// The shared options' ids.
    shared: BTreeSet<String>,
    /// The subcommand's name, its own options' ids, and what clap matched of them.
    command: Option<(String, BTreeSet<String>, ArgMatches)>,
}

impl Layers {
    /// The subcommand's options `args` (as clap parsed them) with its file table under them.
    ///
    /// # Errors
    /// A [`ConfigError::Value`] for a value of the table its option does not take.
    pub fn command<A: Serialize + DeserializeOwned>(&self, args: A) -> Result<A, ConfigError> {
        match &self.command {
            Some((name, own, matches)) => self.apply(Some(name), own, matches, args),
            None => Ok(args),
        }
    }

    /// `args`, parsed by clap from `matches`, merged over the file's `table` (its top when
    /// `None`): what clap took from the command line or a variable wins, the file's value beats
    /// clap's default.
    fn apply<A: Serialize + DeserializeOwned>(
        &self,
        table: Option<&str>,
        own: &BTreeSet<String>,
        matches: &ArgMatches,
        args: A,
    ) -> Result<A, ConfigError> {
        let parsed = match Value::serialize(&args) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => return Err(ConfigError::Internal("options that are not a table".into())),
        };
        // Clap copies the shared options into a subcommand's matches, and groups have ids too:
        // only the level's own options are asked where their value came from.
        let explicit: BTreeSet<&str> = matches
            .ids()
            .map(clap::Id::as_str)
            .filter(|id| own.contains(*id))
            .filter(|id| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .collect();
        // An option clap was given but the type does not serialize under its id (a flattened
        // group without `#[serde(flatten)]`) would silently lose to the file: refuse it.
        let lost = explicit.iter().find(|id| !parsed.contains_key(**id));
        if let Some(id) = lost {
            return Err(ConfigError::Internal(format!(
                "the option {id} is not where its type puts it"
            )));
        }
        let Some(file) = &self.file else {
            return Ok(args);
        };
        let given: Dict = parsed
            .iter()
            .filter(|(key, _)| explicit.contains(key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Figment::from(Layer::new("the defaults", parsed))
            .merge(Layer::new(&file.name(), file.values(table)))
            .merge(Layer::new("the command line", given))
            .extract()
            .map_err(|error| file.explain(table, error))
    }
}

/// One layer, named for what it is in an error.
struct Layer {
    name: String,
    data: Dict,
}

impl Layer {
    fn new(name: &str, data: Dict) -> Self {
        Self {
            name: name.to_owned(),
            data,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// The TOML file (`--config`, `FLYRTECH_CONFIG`): read once, its keys checked against the
/// binary's options before anything runs.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads and parses `path`; `None` without one.
    ///
    /// # Errors
    /// [`ConfigError::Read`], or [`ConfigError::Parse`] for a file that is not TOML (where, and
    /// what is wrong, never the line itself: it may hold a password).
    pub fn load(path: Option<&Path>) -> Result<Option<Self>, ConfigError> {
        let Some(path) = path else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: super::parse_reason(&text, &e),
        })?;
        Ok(Some(Self {
            path: path.to_owned(),
            text,
            table,
        }))
    }

    fn name(&self) -> String {
        format!("config file {}", self.path.display())
    }

    /// The values of `table` (`None`: the top's, without the tables).
    fn values(&self, table: Option<&str>) -> Dict {
        let entries = match table {
            None => Some(&self.table),
            Some(name) => self.table.get(name).and_then(toml::Value::as_table),
        };
        entries
            .into_iter()
            .flatten()
            .filter(|(_, value)| table.is_some() || !value.is_table())
            .filter_map(|(key, value)| Some((key.clone(), Value::serialize(value).ok()?)))
            .collect()
    }

    /// Refuses a key no option of `command` has: at the top, the binary's shared options and
    /// the commands' tables; in a table of one of its commands, that command's options.
    fn check_keys(&self, command: &clap::Command) -> Result<(), ConfigError> {
        let options = |command: &clap::Command| -> BTreeSet<String> {
            command
                .get_arguments()
                .map(|arg| arg.get_id().as_str().to_owned())
                .filter(|id| !matches!(id.as_str(), "help" | "version" | "config"))
                .collect()
        };
        let shared = options(command);
        for (key, value) in &self.table {
            let Some(table) = value.as_table() else {
                if !shared.contains(key) {
                    return Err(self.unknown(None, key, "no shared option has that name"));
                }
                continue;
            };
            let Some(sub) = command.find_subcommand(key) else {
                if COMMANDS.contains(&key.as_str()) {
                    continue;
                }
                let reason = if shared.contains(key) {
                    "a shared option, written at the top, not as a table".to_owned()
                } else {
                    format!("no command of {} has that name", command.get_name())
                };
                return Err(self.unknown(None, key, &reason));
            };
            let own = options(sub);
            if let Some(key) = table.keys().find(|k| !own.contains(k.as_str())) {
                let reason = if shared.contains(key) {
                    "a shared option: write it at the top of the file".to_owned()
                } else {
                    format!("`{}` has no --{}", sub.get_name(), key.replace('_', "-"))
                };
                return Err(self.unknown(Some(sub.get_name()), key, &reason));
            }
        }
        Ok(())
    }

    fn unknown(&self, table: Option<&str>, key: &str, reason: &str) -> ConfigError {
        let place = match table {
            Some(table) => format!("unknown key {key} in [{table}]"),
            None => format!("unknown key {key}"),
        };
        ConfigError::Unknown(format!("{place} of {}: {reason}", self.at(table, key)))
    }

    /// `config file F, line N` for `key` of `table`; the file alone when the key is not found.
    fn at(&self, table: Option<&str>, key: &str) -> String {
        match self.line(table, key) {
            Some(line) => format!("{}, line {line}", self.name()),
            None => self.name(),
        }
    }

    /// The line of `key` in `table`, from the parser's spans.
    fn line(&self, table: Option<&str>, key: &str) -> Option<usize> {
        fn find<'t, 'i>(
            table: &'t toml::de::DeTable<'i>,
            wanted: &str,
        ) -> Option<(
            &'t toml::Spanned<std::borrow::Cow<'i, str>>,
            &'t toml::Spanned<toml::de::DeValue<'i>>,
        )> {
            table.iter().find(|(k, _)| k.get_ref() == wanted)
        }
        let parsed = toml::de::DeTable::parse(&self.text).ok()?;
        let (found, _) = match table {
            None => find(parsed.get_ref(), key)?,
            Some(name) => find(find(parsed.get_ref(), name)?.1.get_ref().as_table()?, key)?,
        };
        let start = found.span().start.min(self.text.len());
        Some(self.text[..start].matches('\n').count() + 1)
    }

    /// A merge's error as the key, where it came from and why; never the value of a key that
    /// may hold a password.
    fn explain(&self, table: Option<&str>, error: figment::Error) -> ConfigError {
        let key = error.path.last().cloned().unwrap_or_default();
        let from_file = error
            .metadata
            .as_ref()
            .is_some_and(|m| m.name == self.name());
        let place = match &error.metadata {
            _ if from_file => self.at(table, &key),
            Some(metadata) => metadata.name.to_string(),
            None => "the options".to_owned(),
        };
        let reason = if SECRET_KEYS.contains(&key.as_str()) {
            "not valid (not shown: it may hold a password)".to_owned()
        } else {
            flyrtech_infrastructure::secrets::redact_text(&error.kind.to_string())
        };
        ConfigError::Value {
            key,
            reason: format!("in {place}: {reason}"),
        }
    }
}
