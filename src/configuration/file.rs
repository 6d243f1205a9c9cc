//! The settings file: `fulfilld.toml` in the working directory, or the file `--config`
//! (`FULFILLD_CONFIG`) names. Its keys are the settings' environment variable names
//! (`DATABASE_URL = "postgres://…"`, in any case), and its values sit under the
//! environment's and the command line's: a setting given there wins. Values get the same
//! validation, and the same one-line errors, as anywhere else.

use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::{ConfigError, invalid};

/// The file read when `--config` names none, if it exists.
pub const DEFAULT_FILE: &str = "fulfilld.toml";

/// Where each setting's value came from, for `fulfilld config show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Environment,
    File(PathBuf),
    Default,
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("command line"),
            Self::Environment => f.write_str("environment"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Default => f.write_str("default"),
            Self::Unset => f.write_str("unset"),
        }
    }
}

/// One setting as it was resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Its environment variable's name.
    pub name: String,
    /// `None` for a secret, or when unset.
    pub value: Option<String>,
    pub secret: bool,
    pub source: Source,
}

/// The command with the settings file's values as its settings' defaults.
#[derive(Debug, Clone)]
pub struct Layered {
    pub command: clap::Command,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The settings it gave (environment variable names).
    pub from_file: Vec<String>,
}

/// `command` with each value of the settings file (the one `config` names, or
/// [`DEFAULT_FILE`] if it exists) as its setting's default: clap then takes it only when
/// neither the command line nor the environment gives that setting, and checks it with
/// the setting's own parser.
pub fn layer(command: clap::Command, config: Option<&Path>) -> Result<Layered, ConfigError> {
    let path = match config {
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|path| path.exists()),
    };
    let Some(path) = path else {
        return Ok(Layered {
            command,
            file: None,
            from_file: Vec::new(),
        });
    };
    let shown = path.display().to_string();
    let refuse = |problem: String| invalid("FULFILLD_CONFIG", format!("{shown}: {problem}"));
    refuse_shared(&path).map_err(refuse)?;
    let text = std::fs::read_to_string(&path).map_err(|error| refuse(error.to_string()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|error| refuse(error.message().to_owned()))?;
    let mut command = command;
    let mut from_file: Vec<String> = Vec::new();
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        if from_file.contains(&name) {
            return Err(refuse(format!("{name} is given twice")));
        }
        let id = command
            .get_arguments()
            .find(|argument| argument.get_env().is_some_and(|env| env == name.as_str()))
            .map(|argument| argument.get_id().clone())
            .filter(|id| id != "config")
            .ok_or_else(|| refuse(format!("unknown setting {key}")))?;
        let value = scalar(&value).ok_or_else(|| {
            refuse(format!(
                "{key}: expected a string, number, boolean or array of them"
            ))
        })?;
        // Help shows the built-in defaults, never the file's values (secrets among them).
        command = command.mut_arg(id, |argument| {
            let takes_value = argument.get_action().takes_values();
            argument
                .default_value(value)
                .hide_default_value(takes_value)
        });
        from_file.push(name);
    }
    Ok(Layered {
        command,
        file: Some(path),
        from_file,
    })
}

/// Refuses a settings file that others than its owner may write: whoever could would
/// choose where the Stripe key is sent.
#[cfg(unix)]
fn refuse_shared(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| error.to_string())?
        .permissions()
        .mode();
    match mode & 0o022 {
        0 => Ok(()),
        _ => Err(format!(
            "others may write it (mode {:o}); chmod go-w it",
            mode & 0o777
        )),
    }
}

#[cfg(not(unix))]
fn refuse_shared(_: &Path) -> Result<(), String> {
    Ok(())
}

/// A TOML value as the environment would spell it: arrays comma-separated.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(number) => Some(number.to_string()),
        toml::Value::Float(number) => Some(number.to_string()),
        toml::Value::Boolean(flag) => Some(flag.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(_) | toml::Value::Table(_) => None,
                other => scalar(other),
            })
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        toml::Value::Datetime(_) | toml::Value::Table(_) => None,
    }
}

/// Every setting as `matches` resolved it. Where each came from is read from `plain`, the
/// same command line parsed without the file's defaults: a setting the command line or
/// the environment gives came from there, else the file's came from the file.
pub fn resolved(plain: &ArgMatches, matches: &ArgMatches, layered: &Layered) -> Vec<Resolved> {
    let (file, from_file) = (layered.file.as_deref(), &layered.from_file);
    layered
        .command
        .get_arguments()
        .filter_map(|argument| {
            let name = argument.get_env()?.to_string_lossy().into_owned();
            let id = argument.get_id().as_str();
            let source = match (plain.value_source(id), file) {
                (Some(ValueSource::DefaultValue) | None, Some(path))
                    if from_file.contains(&name) =>
                {
                    Source::File(path.to_path_buf())
                }
                (Some(ValueSource::CommandLine), _) => Source::Flag,
                (Some(ValueSource::EnvVariable), _) => Source::Environment,
                (Some(ValueSource::DefaultValue), _) => Source::Default,
                _ => Source::Unset,
            };
            // The file read without `--config`: the default one.
            if id == "config"
                && source == Source::Unset
                && let Some(path) = file
            {
                return Some(Resolved {
                    name,
                    value: Some(path.display().to_string()),
                    secret: false,
                    source: Source::Default,
                });
            }
            let secret = argument.is_hide_env_values_set();
            let value = matches
                .get_raw(id)
                .map(|values| {
                    values
                        .map(|value| value.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|_| !secret);
            Some(Resolved {
                name,
                value,
                secret,
                source,
            })
        })
        .collect()
}
