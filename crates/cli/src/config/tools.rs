//! The one-shot tools' file tables (`[compare]`, `[audit]`, `[backlog]`, `[migrate]`,
//! `[import-legacy]`, `[project-bench]`, `[migrate-bench]`, `[soak]`, `[api-key]`,
//! `[redis-acl]`): each key is the long option with underscores, and the table is put on the
//! command line in front of what the operator typed, so one parser (clap's, with the option's
//! own value parser) reads both and a flag typed later wins. An option whose environment
//! variable is set is left out: the variable beats the file, as everywhere.

use std::ffi::OsString;

use super::ConfigError;

/// Parses the process' command line into `C` (a binary's whole command line, whose shared
/// options are `common`) and merges the shared settings. A one-shot tool's table in the config
/// file is put in front of the tool's own flags and the line parsed again, so the file sets its
/// options too and a flag typed wins. A usage error exits 2 (clap's).
///
/// # Errors
/// A [`ConfigError`] for a file that cannot be read or holds a bad value.
pub fn parse<C>(
    common: impl Fn(&C) -> &super::CommonArgs,
) -> Result<(C, super::Settings), ConfigError>
where
    C: clap::CommandFactory + clap::FromArgMatches,
{
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = C::command().get_matches_from(&argv);
    let cli = C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let settings = super::Settings::resolve(common(&cli))?;
    let Some(name) = matches.subcommand_name() else {
        return Ok((cli, settings));
    };
    let Some(table) = settings.file.tool(name) else {
        return Ok((cli, settings));
    };
    let command = C::command().mut_subcommand(name, |s| s.args_override_self(true));
    let Some(tool) = command.find_subcommand(name) else {
        return Ok((cli, settings));
    };
    let argv = with_file_options(&argv, name, tool, table)?;
    let cli = C::from_arg_matches(&command.get_matches_from(argv)).unwrap_or_else(|e| e.exit());
    Ok((cli, settings))
}

/// `argv` with `table`'s options inserted right after the subcommand `name` (whose clap
/// definition is `command`).
///
/// # Errors
/// [`ConfigError::Value`] for a key that is no option of the command, or a value that is no
/// string, number, boolean or array of those.
pub fn with_file_options(
    argv: &[OsString],
    name: &str,
    command: &clap::Command,
    table: &toml::Table,
) -> Result<Vec<OsString>, ConfigError> {
    let mut options = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            return Err(ConfigError::Value {
                key: "config file",
                reason: format!("unknown key {key:?} in [{name}]: `{name}` has no --{long}"),
            });
        };
        if arg
            .get_env()
            .is_some_and(|var| std::env::var_os(var).is_some())
        {
            continue;
        }
        let text = match value {
            toml::Value::Boolean(false) => continue,
            toml::Value::Boolean(true) => {
                options.push(OsString::from(format!("--{long}")));
                continue;
            }
            toml::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|items| items.join(",")),
            other => scalar(other),
        }
        .ok_or_else(|| ConfigError::Value {
            key: "config file",
            reason: format!("[{name}] {key}: a string, number, boolean or list of them"),
        })?;
        options.push(OsString::from(format!("--{long}={text}")));
    }
    let at = argv
        .iter()
        .position(|a| a.to_str() == Some(name))
        .map_or(argv.len(), |i| i + 1);
    let mut out = argv[..at].to_vec();
    out.extend(options);
    out.extend_from_slice(&argv[at..]);
    Ok(out)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        Command::new("compare")
            .arg(Arg::new("strategies").long("strategies"))
            .arg(Arg::new("runs").long("runs"))
            .arg(Arg::new("wide").long("wide").action(ArgAction::SetTrue))
    }

    #[test]
    fn a_table_becomes_options_before_the_typed_ones() {
        let table: toml::Table =
            toml::from_str("strategies = [\"lua\", \"hash\"]\nruns = 3\nwide = true\n")
                .expect("toml");
        let argv: Vec<OsString> = ["flyrtech", "--redis-url=x", "compare", "--runs=5"]
            .map(OsString::from)
            .to_vec();
        let out = with_file_options(&argv, "compare", &command(), &table).expect("options");
        let shown: Vec<_> = out
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            shown,
            [
                "flyrtech",
                "--redis-url=x",
                "compare",
                "--runs=3",
                "--strategies=lua,hash",
                "--wide",
                "--runs=5"
            ]
        );
        let unknown: toml::Table = toml::from_str("rusn = 3\n").expect("toml");
        let err = with_file_options(&argv, "compare", &command(), &unknown).expect_err("typo");
        assert!(err.to_string().contains("rusn"), "{err}");
    }
}
