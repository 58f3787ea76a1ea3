//! The stage runner: a plugin chain and the mail state its stages see and edit, carried from
//! one transaction to the next of the same session.

use std::sync::Arc;

use crate::mail::{Envelope, MailState};
use crate::plugin::{ActivePlugins, Services, StageCall, StageReport, Transaction as Chain};

/// The chain of a session and the state its stages run on.
pub struct Stages {
    chain: Chain,
    pub state: MailState,
}

impl Stages {
    /// A runner on the plugin set in service now.
    pub fn new(plugins: &ActivePlugins, services: &Services, session_id: &str) -> Stages {
        Stages::on(plugins.current().transaction(session_id, services.clone()))
    }

    /// A runner on a chain made elsewhere (the harness builds its own plugin set).
    pub fn on(chain: Chain) -> Stages {
        Stages {
            chain,
            state: MailState::default(),
        }
    }

    /// Runs one stage on the state.
    pub async fn run(&mut self, call: StageCall<'_>) -> StageReport {
        self.chain.run(call, &mut self.state).await
    }

    /// Runs one stage on another state (the harness runs the delivery and retrieval stages
    /// on copies, so their edits never change what was stored).
    pub async fn run_on(&mut self, call: StageCall<'_>, state: &mut MailState) -> StageReport {
        self.chain.run(call, state).await
    }

    /// The notes plugins left in this transaction.
    pub fn notes(&self) -> std::collections::BTreeMap<String, String> {
        self.chain.notes()
    }

    /// The state for the next transaction: no envelope, message or results, and a fresh chain
    /// (new notes) on the plugin set in service; outside filters go on with the session's
    /// conversation.
    pub fn next_transaction(&mut self, plugins: &ActivePlugins, services: &Services, id: &str) {
        self.state.envelope = Envelope::default();
        self.state.message = None;
        self.state.auth = None;
        let mut fresh = plugins.current().transaction(id, services.clone());
        fresh.take_over(&mut self.chain);
        self.chain = fresh;
    }

    /// A transaction runs on the plugin set in service when it starts (MAIL): after a reload,
    /// the chain is rebuilt on the new set, keeping the notes plugins left so far.
    pub fn refresh(&mut self, plugins: &ActivePlugins, services: &Services, id: &str) {
        let current: Arc<_> = plugins.current();
        if current.generation != self.chain.generation() {
            let mut fresh = current.transaction(id, services.clone());
            fresh.carry_notes(self.chain.notes());
            fresh.take_over(&mut self.chain);
            self.chain = fresh;
        }
    }
}
