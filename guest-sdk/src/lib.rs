//! # mailgate-sdk: write mailgate plugins in Rust
//!
//! A mailgate plugin is a WebAssembly component that the gateway calls at each stage of a
//! message's life (connect, HELO, MAIL FROM, RCPT TO, DATA, delivery, retrieval). With this
//! crate you implement the [`Plugin`] trait — every stage defaults to "continue" — and export
//! your type with [`export_plugin!`]. Build with `cargo build --target wasm32-wasip2` and the
//! result is a component the gateway loads.
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
//!     const STAGES: &'static [Stage] = &[Stage::RcptTo];
//!
//!     fn rcpt_to(_: &Session, _: &Envelope, rcpt: &str, _: &[EsmtpParam]) -> Outcome {
//!         if domain_of(rcpt).eq_ignore_ascii_case("example.com") {
//!             return Outcome::reject(550, "5.1.1", "No mail for example.com here");
//!         }
//!         Outcome::proceed()
//!     }
//! }
//!
//! export_plugin!(NoExampleCom);
//! ```
//!
//! ## What a stage returns
//! An [`Outcome`]: a [`Verdict`] plus a list of [`Edit`]s. Build it with the constructors
//! ([`Outcome::proceed`], [`Outcome::accept`], [`Outcome::reject`], [`Outcome::tempfail`],
//! [`Outcome::disconnect`], [`Outcome::discard`], [`Outcome::quarantine`], [`Outcome::hide`])
//! and chain edits ([`Outcome::add_header`], [`Outcome::remove_part`], ...). The host checks
//! everything: a reject needs a 5xx code, a tempfail a 4xx one, and no header, address or reply
//! may contain CR, LF or NUL. A plugin that breaks the rules gets its failure policy applied.
//!
//! ## Reading the message
//! At `data`, `deliver` and `retrieve` the plugin gets a borrowed [`Message`]. Nothing is
//! copied until asked: [`Message::headers`], [`Message::header`], [`Message::body_range`],
//! [`Message::parts`] (the MIME tree with decoded file names) and [`Message::part_text`].
//!
//! ## Host services
//! [`config`] (the plugin's table from the gateway config), [`log`], [`notes`] (shared by the
//! chain for one transaction), [`kv`] (persistent, needs [`Capability::Kv`]), [`dns`] (needs
//! [`Capability::Dns`]) and [`now_ms`].

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "mailgate_sdk::bindings",
    });
}

mod outcome;
pub mod services;

pub use bindings::mailgate::plugin::host::{DnsError, Level, RecordType};
pub use bindings::mailgate::plugin::types::{
    Capability, ContentType, Delivery, Edit, EnhancedStatus, Envelope, EsmtpParam, Header,
    HeaderField, HeaderInsert, Message, MimePart, Outcome, PartReplacement, PluginInfo, Reply,
    Retrieval, Route, Session, Stage, Verdict,
};
pub use services::{config, dns, kv, log, notes, now_ms};

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        config, dns, domain_of, export_plugin, kv, log, notes, now_ms, Capability, Delivery, Edit,
        Envelope, EsmtpParam, Message, MessageExt, MimePart, Outcome, Plugin, Reply, Retrieval,
        Route, Session, Stage, Verdict,
    };
}

/// A mailgate plugin. Every stage defaults to [`Outcome::proceed`]; the host calls only the
/// stages listed in [`Plugin::STAGES`]. Plugins are stateless between calls: keep state in
/// [`notes`] (one transaction) or [`kv`] (persistent).
pub trait Plugin {
    const NAME: &'static str;
    const VERSION: &'static str = "0.1.0";
    /// The stages this plugin wants to be called at.
    const STAGES: &'static [Stage];
    /// Host capabilities the plugin asks for; the operator must also grant them.
    const CAPABILITIES: &'static [Capability] = &[];

    fn connect(_session: &Session) -> Outcome {
        Outcome::proceed()
    }
    fn helo(_session: &Session, _name: &str) -> Outcome {
        Outcome::proceed()
    }
    fn mail_from(_session: &Session, _sender: &str, _params: &[EsmtpParam]) -> Outcome {
        Outcome::proceed()
    }
    /// `envelope` holds the recipients accepted so far.
    fn rcpt_to(
        _session: &Session,
        _envelope: &Envelope,
        _recipient: &str,
        _params: &[EsmtpParam],
    ) -> Outcome {
        Outcome::proceed()
    }
    fn data(_session: &Session, _envelope: &Envelope, _message: &Message) -> Outcome {
        Outcome::proceed()
    }
    fn deliver(_delivery: &Delivery, _envelope: &Envelope, _message: &Message) -> Outcome {
        Outcome::proceed()
    }
    fn retrieve(_retrieval: &Retrieval, _message: &Message) -> Outcome {
        Outcome::proceed()
    }
}

/// The plugin info [`Plugin`]'s constants describe (used by [`export_plugin!`]).
pub fn describe<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: P::NAME.to_string(),
        version: P::VERSION.to_string(),
        stages: P::STAGES.to_vec(),
        capabilities: P::CAPABILITIES.to_vec(),
    }
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

/// Exports a [`Plugin`] type as the component's `mailgate:plugin/handler` implementation.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            use $crate::bindings::exports::mailgate::plugin::handler as __handler;
            use $crate::bindings::mailgate::plugin::types as __t;

            struct __MailgateExport;

            impl __handler::Guest for __MailgateExport {
                fn describe() -> __t::PluginInfo {
                    $crate::describe::<$plugin>()
                }
                fn connect(session: __t::Session) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::connect(&session)
                }
                fn helo(session: __t::Session, name: String) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::helo(&session, &name)
                }
                fn mail_from(
                    session: __t::Session,
                    sender: String,
                    params: Vec<__t::EsmtpParam>,
                ) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::mail_from(&session, &sender, &params)
                }
                fn rcpt_to(
                    session: __t::Session,
                    envelope: __t::Envelope,
                    recipient: String,
                    params: Vec<__t::EsmtpParam>,
                ) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::rcpt_to(&session, &envelope, &recipient, &params)
                }
                fn data(
                    session: __t::Session,
                    envelope: __t::Envelope,
                    message: &__t::Message,
                ) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::data(&session, &envelope, message)
                }
                fn deliver(
                    delivery: __t::Delivery,
                    envelope: __t::Envelope,
                    message: &__t::Message,
                ) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::deliver(&delivery, &envelope, message)
                }
                fn retrieve(retrieval: __t::Retrieval, message: &__t::Message) -> __t::Outcome {
                    <$plugin as $crate::Plugin>::retrieve(&retrieval, message)
                }
            }

    $crate::bindings::export!(__MailgateExport with_types_in $crate::bindings);
        };
    };
}
