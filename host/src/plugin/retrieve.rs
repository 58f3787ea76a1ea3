//! The retrieve stage for the readers (POP3, IMAP, JMAP): asks the plugin chain about one
//! message before a client sees it. Hidden (or refused) messages are left out of the session;
//! edits change only what this client receives. It runs here, above the stores, so that the
//! stores know nothing of plugins.

use std::sync::Arc;

use super::{PluginSet, Services, StageCall, Verdict};
use crate::mail::{MailState, Retrieval, Session};
use crate::message::Message;

/// What one client is shown of one message.
pub enum View {
    Hidden,
    /// Shown; `Some` holds the edited bytes this client gets instead of the file.
    Shown(Option<Arc<Vec<u8>>>),
}

/// Runs the retrieve stage for one message (the caller checks the set handles the stage).
pub async fn view(
    plugins: &Arc<PluginSet>,
    services: &Services,
    session: Session,
    folder: &str,
    uid: u32,
    bytes: Vec<u8>,
) -> View {
    let user = session.auth_user.clone().unwrap_or_default();
    let original = Arc::new(Message::new(bytes));
    let mut state = MailState {
        session,
        message: Some(original.clone()),
        retrieval: Some(Retrieval {
            user: user.clone(),
            folder: folder.to_string(),
            uid,
        }),
        ..MailState::default()
    };
    let mut chain = plugins.transaction(&state.session.id, services.clone());
    let report = chain.run(StageCall::Retrieve, &mut state).await;
    match report.decision {
        Verdict::Continue | Verdict::Accept => match state.message {
            Some(m) if !Arc::ptr_eq(&m, &original) => View::Shown(Some(Arc::new(m.raw().to_vec()))),
            _ => View::Shown(None),
        },
        other => {
            tracing::info!(user, folder, uid, "hidden from this session: {other:?}");
            View::Hidden
        }
    }
}
