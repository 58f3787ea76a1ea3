//! What a plugin says about itself (`describe`): its name, version, stages, the host powers
//! it needs and the settings it takes.

use super::{Capability, Stage};

/// What a plugin said about itself in `describe`, and the stages it is called at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// 0.2: the stages the component exports; 0.1: the stages `describe` listed.
    pub stages: Vec<Stage>,
    pub capabilities: Vec<Capability>,
    /// The settings the plugin declares; empty means its config table is not checked.
    pub config: Vec<ConfigKey>,
    /// The contract version the component implements, e.g. `0.2.0`.
    pub contract: &'static str,
}

/// The type a plugin setting must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    String,
    Integer,
    Float,
    Boolean,
    StringList,
    Table,
}

impl ValueType {
    const ALL: [ValueType; 6] = [
        ValueType::String,
        ValueType::Integer,
        ValueType::Float,
        ValueType::Boolean,
        ValueType::StringList,
        ValueType::Table,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Boolean => "boolean",
            ValueType::StringList => "string-list",
            ValueType::Table => "table",
        }
    }

    pub(super) fn accepts(self, value: &toml::Value) -> bool {
        match (self, value) {
            (ValueType::String, toml::Value::String(_))
            | (ValueType::Integer, toml::Value::Integer(_))
            | (ValueType::Float, toml::Value::Float(_) | toml::Value::Integer(_))
            | (ValueType::Boolean, toml::Value::Boolean(_))
            | (ValueType::Table, toml::Value::Table(_)) => true,
            (ValueType::StringList, toml::Value::Array(items)) => items.iter().all(|i| i.is_str()),
            _ => false,
        }
    }
}

/// One setting a plugin declares in `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: String,
    pub value_type: ValueType,
    pub default: Option<String>,
    pub doc: String,
    pub required: bool,
}

impl ConfigKey {
    /// A declared key; an unknown type name is an error naming the key.
    pub fn new(
        name: String,
        value_type: &str,
        default: Option<String>,
        doc: String,
        required: bool,
    ) -> Result<ConfigKey, String> {
        let Some(value_type) = ValueType::ALL.into_iter().find(|t| t.name() == value_type) else {
            return Err(format!(
                "key {name:?} with unknown type {value_type:?} (known: string, integer, float, \
                 boolean, string-list, table)"
            ));
        };
        Ok(ConfigKey {
            name,
            value_type,
            default,
            doc,
            required,
        })
    }
}
