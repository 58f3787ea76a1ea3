//! Edits as a plugin (untrusted guest code) asks for them, applied to any message. The input
//! is a message, then edits separated by NUL: a kind byte, then fields separated by 0x01.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailgate::message::{apply_message_edits, Message, MessageEdit};

fn text(bytes: Option<&&[u8]>) -> String {
    String::from_utf8_lossy(bytes.copied().unwrap_or_default()).into_owned()
}

fn number(bytes: Option<&&[u8]>) -> u32 {
    bytes
        .and_then(|b| b.first())
        .map_or(0, |&n| u32::from(n % 16))
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = data.split(|&b| b == 0);
    let message = Message::new(pieces.next().unwrap_or_default().to_vec());
    let edits: Vec<MessageEdit> = pieces
        .take(8)
        .filter_map(|piece| {
            let (&kind, rest) = piece.split_first()?;
            let f: Vec<&[u8]> = rest.split(|&b| b == 1).collect();
            Some(match kind % 8 {
                0 => MessageEdit::AddHeader { name: text(f.first()), value: text(f.get(1)) },
                1 => MessageEdit::InsertHeader {
                    index: number(f.first()),
                    name: text(f.get(1)),
                    value: text(f.get(2)),
                },
                2 => MessageEdit::SetHeader { name: text(f.first()), value: text(f.get(1)) },
                3 => MessageEdit::RemoveHeader(text(f.first())),
                4 => MessageEdit::ReplaceBody(f.first().copied().unwrap_or_default().to_vec()),
                5 => MessageEdit::ReplacePart {
                    id: number(f.first()),
                    content_type: text(f.get(1)),
                    content: f.get(2).copied().unwrap_or_default().to_vec(),
                },
                6 => MessageEdit::RemovePart(number(f.first())),
                _ => MessageEdit::AppendFooter(text(f.first())),
            })
        })
        .collect();
    if let Ok(Some(edited)) = apply_message_edits(&message, &edits) {
        // The result is a message again: it parses, and its tree is walkable.
        let _ = edited.parts().len();
        let _ = edited.headers();
    }
});
