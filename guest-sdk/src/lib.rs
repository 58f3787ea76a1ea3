//! # mailgate-sdk: write mailgate plugins in Rust
//!
//! A mailgate plugin is a WebAssembly component that the gateway calls at the stages of a
//! message's life it chooses: connect, HELO, MAIL FROM, RCPT TO, DATA, delivery, retrieval.
//! With this crate you give your type a name ([`Plugin`]), implement one trait per stage you
//! want ([`Connect`], [`Helo`], [`MailFrom`], [`RcptTo`], [`Data`], [`Deliver`], [`Retrieve`]),
//! and export it with [`export_plugin!`], listing those stages. The component then exports
//! exactly those stages (contract `mailgate:plugin@0.2.1`), and the gateway calls only them.
//! Build with `mailgate plugin build` (or `cargo build --target wasm32-wasip2`).
//!
//! ## Example: refuse one recipient domain
//!
//! This is `examples/reject_domain.rs`, which the test suite builds as a component and runs:
//!
//! ```ignore
//! use mailgate_sdk::prelude::*;
//!
//! struct NoExampleCom;
//!
//! impl Plugin for NoExampleCom {
//!     const NAME: &'static str = "no-example-com";
//! }
//!
//! impl RcptTo for NoExampleCom {
//!     fn rcpt_to(_: &Session, _: &Envelope, rcpt: &str, _: &[EsmtpParam]) -> Outcome {
//!         if domain_of(rcpt).eq_ignore_ascii_case("example.com") {
//!             return Outcome::reject(550, "5.1.1", "No mail for example.com here");
//!         }
//!         Outcome::proceed()
//!     }
//! }
//!
//! export_plugin!(NoExampleCom: RcptTo);
//! ```
//!
//! Listing a stage you did not implement is a compile error; a stage trait implemented but not
//! listed is not exported, so list every stage you implement.
//!
//! ## What a stage returns
//! An [`Outcome`]: a [`Verdict`] plus the [`Edit`]s to make. Build it with the constructors
//! ([`Outcome::proceed`], [`Outcome::accept`], [`Outcome::reject`], [`Outcome::tempfail`],
//! [`Outcome::disconnect`], [`Outcome::discard`], [`Outcome::quarantine`], [`Outcome::hide`])
//! and chain edits ([`Outcome::add_header`], [`Outcome::remove_part`], ...). The host checks
//! everything: a reject needs a 5xx code, a tempfail a 4xx one, and no header, address or reply
//! may contain CR, LF or NUL. A plugin that breaks the rules gets its failure policy applied,
//! and the reason is in the gateway log and in `mailgate test` output.
//!
//! ## Reading the message
//! At `data`, `deliver` and `retrieve` the plugin gets a borrowed [`Message`]. Nothing is
//! copied until asked: [`Message::headers`], [`Message::header`], [`Message::body_range`],
//! [`Message::parts`] (the MIME tree with decoded file names) and [`Message::part_text`];
//! [`MessageExt`] adds [`MessageExt::header_value`] and [`MessageExt::attachments`].
//!
//! ## Host services
//! [`config`] (the plugin's table from the gateway config), [`log`], [`notes`] (shared by the
//! chain for one transaction), [`kv`] (persistent, needs [`Capability::Kv`]), [`dns`] (needs
//! [`Capability::Dns`]), [`files`] (read-only files the operator grants, needs
//! [`Capability::Files`]) and [`now_ms`]. [`auth`] has the gateway's SPF, DKIM, DMARC and ARC
//! results for the message (contract 0.2.1; no capability needed).
//!
//! ## State
//! The gateway reuses an instance for many transactions (`instance-reuse`, per plugin), so
//! statics and globals persist from one transaction, and one sender, to the next. Keep
//! per-transaction state in [`notes`] and shared state in [`kv`]; set `instance-reuse = 1` in
//! the plugin's config entry when the plugin must start fresh every time.
//!
//! ## Panics
//! A panic ends the stage call with a fault (the plugin's `on-failure` policy applies); its
//! message and location go to the gateway log and to `mailgate test` output.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin-base",
        pub_export_macro: true,
        export_macro_name: "export_base",
        default_bindings_module: "mailgate_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

/// One module per stage: each holds the bindings of a world exporting that one stage, so a
/// plugin exports exactly the stages it lists in [`export_plugin!`].
#[doc(hidden)]
pub mod stages {
    // wit-bindgen wants literal strings, so each world is written out.
    macro_rules! stage_bindings {
        ($module:ident, $inline:literal, $world:literal, $bindings:literal, $export:literal) => {
            pub mod $module {
                wit_bindgen::generate!({
                    inline: $inline,
                    path: "../wit",
                    world: $world,
                    pub_export_macro: true,
                    export_macro_name: $export,
                    default_bindings_module: $bindings,
                    with: {
                        "mailgate:plugin/types@0.2.1": crate::bindings::mailgate::plugin::types,
                    },
                });
            }
        };
    }
    stage_bindings!(
        connect,
        "package mailgate:sdk-connect; world connect-stage { export mailgate:plugin/connect@0.2.1; }",
        "mailgate:sdk-connect/connect-stage",
        "mailgate_sdk::stages::connect",
        "export_connect_stage"
    );
    stage_bindings!(
        helo,
        "package mailgate:sdk-helo; world helo-stage { export mailgate:plugin/helo@0.2.1; }",
        "mailgate:sdk-helo/helo-stage",
        "mailgate_sdk::stages::helo",
        "export_helo_stage"
    );
    stage_bindings!(
        mail_from,
        "package mailgate:sdk-mail-from; world mail-from-stage { export mailgate:plugin/mail-from@0.2.1; }",
        "mailgate:sdk-mail-from/mail-from-stage",
        "mailgate_sdk::stages::mail_from",
        "export_mail_from_stage"
    );
    stage_bindings!(
        rcpt_to,
        "package mailgate:sdk-rcpt-to; world rcpt-to-stage { export mailgate:plugin/rcpt-to@0.2.1; }",
        "mailgate:sdk-rcpt-to/rcpt-to-stage",
        "mailgate_sdk::stages::rcpt_to",
        "export_rcpt_to_stage"
    );
    stage_bindings!(
        data,
        "package mailgate:sdk-data; world data-stage { export mailgate:plugin/data@0.2.1; }",
        "mailgate:sdk-data/data-stage",
        "mailgate_sdk::stages::data",
        "export_data_stage"
    );
    stage_bindings!(
        deliver,
        "package mailgate:sdk-deliver; world deliver-stage { export mailgate:plugin/deliver@0.2.1; }",
        "mailgate:sdk-deliver/deliver-stage",
        "mailgate_sdk::stages::deliver",
        "export_deliver_stage"
    );
    stage_bindings!(
        retrieve,
        "package mailgate:sdk-retrieve; world retrieve-stage { export mailgate:plugin/retrieve@0.2.1; }",
        "mailgate:sdk-retrieve/retrieve-stage",
        "mailgate_sdk::stages::retrieve",
        "export_retrieve_stage"
    );
}

pub mod auth;
mod outcome;
pub mod services;

pub use bindings::mailgate::plugin::host::{Denied, DnsError, Level, RecordType};
pub use bindings::mailgate::plugin::types::{
    ContentType, Delivery, EnhancedStatus, Envelope, EsmtpParam, Header, HostPort, Message,
    MimePart, Reply, Retrieval, Route, Session, Verdict,
};
pub use outcome::{Edit, Outcome};
pub use services::{config, dns, files, kv, log, notes, now_ms};

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        config, dns, domain_of, export_plugin, files, kv, log, notes, now_ms, Capability,
        ConfigKey, Connect, Data, Deliver, Delivery, Edit, Envelope, EsmtpParam, Helo, HostPort,
        MailFrom, Message, MessageExt, MimePart, Outcome, Plugin, RcptTo, Reply, Retrieval,
        Retrieve, Route, Session, ValueType, Verdict,
    };
}

/// Host powers a plugin asks for; the operator must also grant them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// The persistent per-plugin store ([`kv`]).
    Kv,
    /// DNS lookups ([`dns`]).
    Dns,
    /// Reading files under a directory the operator grants ([`files`]).
    Files,
}

impl Capability {
    /// The name in the contract and the gateway config.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Dns => "dns",
            Capability::Files => "files",
        }
    }
}

/// The type a config key's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A TOML string.
    String,
    /// A TOML integer.
    Integer,
    /// A TOML float (an integer is accepted too).
    Float,
    /// `true` or `false`.
    Boolean,
    /// An array of strings.
    StringList,
    /// A TOML table (read it with [`config::json`]).
    Table,
}

impl ValueType {
    fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::Boolean => "boolean",
            ValueType::StringList => "string-list",
            ValueType::Table => "table",
        }
    }
}

/// One key of the plugin's config table, declared in [`Plugin::CONFIG`]: the gateway refuses
/// configs with undeclared keys or values of the wrong type, and `mailgate plugins --explain`
/// prints the list.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    /// The key in `[plugin.config]`.
    pub name: &'static str,
    /// The type its value must have.
    pub value_type: ValueType,
    /// The default as TOML text, e.g. `"5"` or `"[\"a\"]"`; shown to operators.
    pub default: Option<&'static str>,
    /// One line saying what the key does (shown by `mailgate plugins --explain`).
    pub doc: &'static str,
    /// True when the operator must set it.
    pub required: bool,
}

impl ConfigKey {
    /// An optional key.
    pub const fn new(name: &'static str, value_type: ValueType, doc: &'static str) -> ConfigKey {
        ConfigKey {
            name,
            value_type,
            default: None,
            doc,
            required: false,
        }
    }

    /// The same key with a default, as TOML text.
    pub const fn default(mut self, default: &'static str) -> ConfigKey {
        self.default = Some(default);
        self
    }

    /// The same key, which the operator must set.
    pub const fn required(mut self) -> ConfigKey {
        self.required = true;
        self
    }
}

/// What a plugin is. Stages are separate traits.
pub trait Plugin {
    /// The plugin's name: used in logs, reports, `decided-by` and as its kv namespace.
    const NAME: &'static str;
    /// The plugin's version, shown by `mailgate plugins`.
    const VERSION: &'static str = "0.1.0";
    /// Host capabilities the plugin asks for; the operator must also grant them.
    const CAPABILITIES: &'static [Capability] = &[];
    /// The keys of the plugin's config table; empty accepts any table unchecked.
    const CONFIG: &'static [ConfigKey] = &[];
}

/// Called when a client connects.
pub trait Connect: Plugin {
    /// Decides on a new connection.
    fn connect(session: &Session) -> Outcome;
}
/// Called at HELO/EHLO.
pub trait Helo: Plugin {
    /// Decides on the HELO/EHLO name.
    fn helo(session: &Session, name: &str) -> Outcome;
}
/// Called at MAIL FROM.
pub trait MailFrom: Plugin {
    /// Decides on the sender (`""` is the null sender `<>`).
    fn mail_from(session: &Session, sender: &str, params: &[EsmtpParam]) -> Outcome;
}
/// Called at each RCPT TO; `envelope` holds the recipients accepted so far.
pub trait RcptTo: Plugin {
    /// Decides on one recipient.
    fn rcpt_to(
        session: &Session,
        envelope: &Envelope,
        recipient: &str,
        params: &[EsmtpParam],
    ) -> Outcome;
}
/// Called when the message is in.
pub trait Data: Plugin {
    /// Decides on the whole message.
    fn data(session: &Session, envelope: &Envelope, message: &Message) -> Outcome;
}
/// Called before each delivery attempt.
pub trait Deliver: Plugin {
    /// Decides on one delivery attempt (reroute, defer, edit per destination).
    fn deliver(delivery: &Delivery, envelope: &Envelope, message: &Message) -> Outcome;
}
/// Called before a POP3 or IMAP client reads a message.
pub trait Retrieve: Plugin {
    /// Decides whether, and how, a client sees the message.
    fn retrieve(retrieval: &Retrieval, message: &Message) -> Outcome;
}

/// The plugin info [`Plugin`]'s constants describe (used by [`export_plugin!`]).
#[doc(hidden)]
pub fn describe<P: Plugin>() -> bindings::mailgate::plugin::types::PluginInfo {
    install_panic_hook();
    bindings::mailgate::plugin::types::PluginInfo {
        name: P::NAME.to_string(),
        version: P::VERSION.to_string(),
        capabilities: P::CAPABILITIES
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        config: P::CONFIG
            .iter()
            .map(|k| bindings::mailgate::plugin::types::ConfigKey {
                name: k.name.to_string(),
                value_type: k.value_type.name().to_string(),
                default: k.default.map(str::to_string),
                doc: k.doc.to_string(),
                required: k.required,
            })
            .collect(),
    }
}

/// Runs a stage's handler and makes its outcome the host's: its edits through the `edits`
/// interface, then the verdict. The panic hook goes in first, so that a panic in the very
/// first call of an instance is reported in the plugin's words too. Used by
/// [`export_plugin!`].
#[doc(hidden)]
pub fn finish(stage: impl FnOnce() -> Outcome) -> Verdict {
    install_panic_hook();
    stage().submit()
}

/// Sends panic messages to the gateway log (as an error line, and on stderr, which the host
/// shows with the fault) before the trap ends the call.
fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = format!("panic: {info}");
            eprintln!("{text}");
            log::error(&text);
        }));
    });
}

/// The domain of an address (after the last `@`), or "" if it has none.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Conveniences on the message resource.
pub trait MessageExt {
    /// The decoded value of the first field with this name.
    fn header_value(&self, name: &str) -> Option<String>;
    /// Parts that carry a file: a file name or an `attachment` disposition.
    fn attachments(&self) -> Vec<MimePart>;
}

impl MessageExt for Message {
    fn header_value(&self, name: &str) -> Option<String> {
        self.header(name).into_iter().next().map(|h| h.decoded)
    }

    fn attachments(&self) -> Vec<MimePart> {
        self.parts()
            .into_iter()
            .filter(|p| p.filename.is_some() || p.disposition.as_deref() == Some("attachment"))
            .collect()
    }
}

/// Exports a [`Plugin`] type and the stages it implements:
/// `export_plugin!(MyPlugin: RcptTo, Data);`.
#[macro_export]
macro_rules! export_plugin {
    // The stages only, for a plugin that writes its own `describe` (through
    // `bindings::export_base!`), e.g. one whose name comes from its config.
    (@stages $plugin:ty: $($stage:ident),* $(,)?) => {
        $($crate::export_plugin!(@stage $plugin, $stage);)*
    };
    (@stage $plugin:ty, Connect) => {
        const _: () = {
            use $crate::stages::connect as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::connect::Guest for __Stage {
                fn handle(session: $crate::Session) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::Connect>::connect(&session))
                }
            }
            __s::export_connect_stage!(__Stage with_types_in $crate::stages::connect);
        };
    };
    (@stage $plugin:ty, Helo) => {
        const _: () = {
            use $crate::stages::helo as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::helo::Guest for __Stage {
                fn handle(session: $crate::Session, name: String) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::Helo>::helo(&session, &name))
                }
            }
            __s::export_helo_stage!(__Stage with_types_in $crate::stages::helo);
        };
    };
    (@stage $plugin:ty, MailFrom) => {
        const _: () = {
            use $crate::stages::mail_from as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::mail_from::Guest for __Stage {
                fn handle(
                    session: $crate::Session,
                    sender: String,
                    params: Vec<$crate::EsmtpParam>,
                ) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::MailFrom>::mail_from(
                        &session, &sender, &params,
                    ))
                }
            }
            __s::export_mail_from_stage!(__Stage with_types_in $crate::stages::mail_from);
        };
    };
    (@stage $plugin:ty, RcptTo) => {
        const _: () = {
            use $crate::stages::rcpt_to as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::rcpt_to::Guest for __Stage {
                fn handle(
                    session: $crate::Session,
                    envelope: $crate::Envelope,
                    recipient: String,
                    params: Vec<$crate::EsmtpParam>,
                ) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::RcptTo>::rcpt_to(
                        &session, &envelope, &recipient, &params,
                    ))
                }
            }
            __s::export_rcpt_to_stage!(__Stage with_types_in $crate::stages::rcpt_to);
        };
    };
    (@stage $plugin:ty, Data) => {
        const _: () = {
            use $crate::stages::data as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::data::Guest for __Stage {
                fn handle(
                    session: $crate::Session,
                    envelope: $crate::Envelope,
                    message: &$crate::Message,
                ) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::Data>::data(&session, &envelope, message))
                }
            }
            __s::export_data_stage!(__Stage with_types_in $crate::stages::data);
        };
    };
    (@stage $plugin:ty, Deliver) => {
        const _: () = {
            use $crate::stages::deliver as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::deliver::Guest for __Stage {
                fn handle(
                    delivery: $crate::Delivery,
                    envelope: $crate::Envelope,
                    message: &$crate::Message,
                ) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::Deliver>::deliver(
                        &delivery, &envelope, message,
                    ))
                }
            }
            __s::export_deliver_stage!(__Stage with_types_in $crate::stages::deliver);
        };
    };
    (@stage $plugin:ty, Retrieve) => {
        const _: () = {
            use $crate::stages::retrieve as __s;
            struct __Stage;
            impl __s::exports::mailgate::plugin::retrieve::Guest for __Stage {
                fn handle(retrieval: $crate::Retrieval, message: &$crate::Message) -> $crate::Verdict {
                    $crate::finish(|| <$plugin as $crate::Retrieve>::retrieve(&retrieval, message))
                }
            }
            __s::export_retrieve_stage!(__Stage with_types_in $crate::stages::retrieve);
        };
    };
    // Must come last: `$plugin:ty` cannot back out of the `@` forms above.
    ($plugin:ty $(: $($stage:ident),* $(,)?)?) => {
        const _: () = {
            struct __MailgateExport;

            impl $crate::bindings::exports::mailgate::plugin::info::Guest for __MailgateExport {
                fn describe() -> $crate::bindings::mailgate::plugin::types::PluginInfo {
                    $crate::describe::<$plugin>()
                }
            }
            $crate::bindings::export_base!(__MailgateExport with_types_in $crate::bindings);
            $($($crate::export_plugin!(@stage $plugin, $stage);)*)?
        };
    };
}
