//! The settings file: `fulfilld.toml` in the working directory, or the file `--config`
//! (`FULFILLD_CONFIG`) names. Its keys are the settings' environment variable names
//! (`DATABASE_URL = "postgres://…"`, in any case), and its values sit under the
//! environment's and the command line's: a setting given there wins. Values get the same
//! validation, and the same one-line errors, as anywhere else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

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

/// A command line with the settings file's values in it.
#[derive(Debug, Clone)]
pub struct Layered {
    pub args: Vec<OsString>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The settings it gave (environment variable names).
    pub from_file: Vec<String>,
}

/// The command line `args`, with the settings file's values added as flags for every
/// setting that neither the environment nor the command line gives. `C` is the command
/// whose arguments are the settings; `config` the file `--config` named.
pub fn layer<C: CommandFactory>(
    args: Vec<OsString>,
    config: Option<&Path>,
) -> Result<Layered, ConfigError> {
    let path = match config {
        Some(path) => Some(path.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|path| path.exists()),
    };
    let Some(path) = path else {
        return Ok(Layered {
            args,
            file: None,
            from_file: Vec::new(),
        });
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|error| invalid("FULFILLD_CONFIG", format!("cannot read {shown}: {error}")))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|error| invalid("FULFILLD_CONFIG", format!("{shown}: {}", error.message())))?;
    let command = C::command();
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .unwrap_or_default();
    let mut layered = args;
    let mut from_file = Vec::new();
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_env().is_some_and(|env| env == name.as_str()))
            .filter(|argument| argument.get_id() != "config")
            .ok_or_else(|| invalid("FULFILLD_CONFIG", format!("{shown}: unknown setting {key}")))?;
        let value = scalar(&value).ok_or_else(|| {
            invalid(
                "FULFILLD_CONFIG",
                format!("{shown}: {key}: expected a string, number, boolean or array of them"),
            )
        })?;
        if given(&matches, argument.get_id().as_str()) {
            continue;
        }
        let long = argument.get_long().unwrap_or(argument.get_id().as_str());
        layered.push(OsString::from(format!("--{long}={value}")));
        from_file.push(name);
    }
    Ok(Layered {
        args: layered,
        file: Some(path),
        from_file,
    })
}

/// Whether the environment or the command line gives the argument `id`.
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
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

/// Every setting of `C` as `matches` resolved it, the file's marked as such.
pub fn resolved<C: CommandFactory>(matches: &ArgMatches, layered: &Layered) -> Vec<Resolved> {
    let (file, from_file) = (layered.file.as_deref(), &layered.from_file);
    let command = C::command();
    command
        .get_arguments()
        .filter_map(|argument| {
            let name = argument.get_env()?.to_string_lossy().into_owned();
            let id = argument.get_id().as_str();
            let source = match (matches.value_source(id), file) {
                (Some(_), Some(path)) if from_file.contains(&name) => {
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
