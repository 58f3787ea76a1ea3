//! FETCH items served from the folder's field cache (see `store::mailbox::Field`): ENVELOPE,
//! BODYSTRUCTURE, BODY and the header sections come from a few hundred cached bytes instead of
//! the message file, for every session; the first FETCH that needs them computes and keeps them.

use imap_codec::imap_types::fetch::{MessageDataItemName, Section};

use super::super::wire;
use crate::message::Message;
use crate::store::mailbox::{Field, Folder, MailEntry};

/// What one message's FETCH can take from the cache instead of the message.
pub(super) struct Cached {
    pub envelope: Option<Vec<u8>>,
    pub body_structure: Option<Vec<u8>>,
    pub body: Option<Vec<u8>>,
    /// The message's header block alone, parsed: header sections are cut from it.
    pub header: Message,
}

/// The cached fields a FETCH of `items` needs, when the cache can answer every item (and no
/// BINARY item is asked); `None` when the message must be read anyway.
pub(super) fn fields_for(items: &[MessageDataItemName<'_>]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    for item in items {
        let field = match item {
            MessageDataItemName::Uid
            | MessageDataItemName::Flags
            | MessageDataItemName::InternalDate
            | MessageDataItemName::Rfc822Size => continue,
            MessageDataItemName::Envelope => Field::Envelope,
            MessageDataItemName::BodyStructure => Field::BodyStructure,
            MessageDataItemName::Body => Field::Body,
            MessageDataItemName::Rfc822Header => Field::Header,
            MessageDataItemName::BodyExt {
                section:
                    Some(
                        Section::Header(None)
                        | Section::HeaderFields(None, _)
                        | Section::HeaderFieldsNot(None, _),
                    ),
                ..
            } => Field::Header,
            _ => return None,
        };
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    (!fields.is_empty()).then_some(fields)
}

/// The cached `fields` of a message, when all of them are cached.
pub(super) fn lookup(folder: &Folder, entry: &MailEntry, fields: &[Field]) -> Option<Cached> {
    let values = folder.cached(entry, fields)?;
    let mut cached = Cached {
        envelope: None,
        body_structure: None,
        body: None,
        header: Message::new(Vec::new()),
    };
    for (field, value) in fields.iter().zip(values) {
        match field {
            Field::Envelope => cached.envelope = Some(value),
            Field::BodyStructure => cached.body_structure = Some(value),
            Field::Body => cached.body = Some(value),
            Field::Header => cached.header = Message::new(value),
            Field::Date => {}
        }
    }
    Some(cached)
}

/// Computes and keeps every cacheable field of a message just read, so the next FETCH of any
/// of them, in any session, reads none of the message.
pub(super) fn fill(folder: &Folder, entry: &MailEntry, message: &Message) {
    let header = &message.raw()[..message.header_block().body_start];
    let envelope = wire::envelope(message);
    let body_structure = wire::body_structure(message, true);
    let body = wire::body_structure(message, false);
    folder.cache(
        entry,
        &[
            (Field::Header, header),
            (Field::Envelope, &envelope),
            (Field::BodyStructure, &body_structure),
            (Field::Body, &body),
        ],
    );
}
